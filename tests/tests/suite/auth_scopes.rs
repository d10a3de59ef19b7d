//! Tenancy: every route requires its scope, proxy-scoped tokens act on their
//! own proxy only, and foreign and unknown proxies look the same.

use crate::common;

use common::auth::*;
use common::*;
use serde_json::json;

#[tokio::test]
async fn every_route_requires_its_scope() {
    let h = Harness::start().await;
    let alice = user_token("alice");
    assert_eq!(h.register(&alice, "edge-1").await.0, 201);
    let scoped = |scope: &str| token("alice", json!({"scope": scope}));
    for route in ROUTES {
        let (needed, others) = match route {
            Route::Register => ("proxies:write", "metrics:read metrics:write"),
            Route::Record => ("metrics:write", "metrics:read proxies:write"),
            Route::List => ("", "metrics:write"),
            _ => ("metrics:read", "metrics:write proxies:write"),
        };
        let proxy = if matches!(route, Route::Register) {
            "edge-new"
        } else {
            "edge-1"
        };
        let (status, body) = call(&h.app, route, &scoped(others), proxy).await;
        if needed.is_empty() {
            assert_eq!(status, 200, "{route:?} needs no scope: {body}");
            continue;
        }
        assert_error(status, &body, 403, "FORBIDDEN");
        assert!(body["message"].as_str().unwrap().contains(needed), "{body}");
        // a scope-less token on an unknown proxy: still 403, decided first
        let (status, _) = call(&h.app, route, &scoped(""), "ghost").await;
        assert_eq!(status, 403, "{route:?}");
        let (status, body) = call(&h.app, route, &scoped(needed), proxy).await;
        assert!(
            status == 200 || status == 201,
            "{route:?} with {needed}: {body}"
        );
    }
}

#[tokio::test]
async fn proxy_scoped_tokens_act_on_their_own_proxy_only() {
    let h = Harness::start().await;
    let alice = user_token("alice");
    for id in ["edge-1", "edge-2"] {
        assert_eq!(h.register(&alice, id).await.0, 201);
    }
    let edge1 = token("alice", json!({"proxy_id": "edge-1", "tier": "pro"}));
    let (app, store) = counted_app(&h).await;
    for route in PROXY_ROUTES {
        for other in ["edge-2", "ghost-proxy"] {
            store.take();
            let (status, body) = call(&app, route, &edge1, other).await;
            assert_error(status, &body, 403, "FORBIDDEN");
            assert!(
                store.take().is_empty(),
                "{route:?}: decided before any storage call"
            );
        }
        let (status, body) = call(&app, route, &edge1, "edge-1").await;
        assert!(status == 200 || status == 201, "{route:?}: {body}");
    }
    // registering any other id is outside its reach too
    let (status, body) = call(&app, Route::Register, &edge1, "edge-3").await;
    assert_error(status, &body, 403, "FORBIDDEN");
    // it lists its own proxy only
    let (status, body) = call(&app, Route::List, &edge1, "").await;
    assert_eq!(status, 200);
    assert_eq!(body["count"], 1);
    assert_eq!(body["proxies"][0]["proxyId"], "edge-1");

    // The token a proxy should hold: its proxy_id and metrics:write only.
    let proxy_token = token(
        "alice",
        json!({"proxy_id": "edge-1", "scope": "metrics:write"}),
    );
    assert_eq!(
        call(&app, Route::Record, &proxy_token, "edge-1").await.0,
        201
    );
    for route in [Route::Daily, Route::Summary, Route::Register] {
        assert_eq!(
            call(&app, route, &proxy_token, "edge-1").await.0,
            403,
            "{route:?}"
        );
    }
    assert_eq!(
        call(&app, Route::Record, &proxy_token, "edge-2").await.0,
        403
    );
    // and a proxy token of alice's is no key to anyone else's proxy of that name
    let mallory_proxy = token(
        "mallory",
        json!({"proxy_id": "edge-1", "scope": "metrics:write"}),
    );
    assert_eq!(
        call(&app, Route::Record, &mallory_proxy, "edge-1").await.0,
        404
    );
}

#[tokio::test]
async fn foreign_and_unknown_proxies_get_the_same_404_after_one_read() {
    let h = Harness::start().await;
    let alice = user_token("alice");
    let mallory = user_token("mallory");
    assert_eq!(h.register(&alice, "edge-1").await.0, 201);
    let (app, store) = counted_app(&h).await;
    for route in PROXY_ROUTES {
        store.take();
        let (s_foreign, b_foreign) = call(&app, route, &mallory, "edge-1").await;
        let foreign_ops = store.take();
        let (s_unknown, b_unknown) = call(&app, route, &mallory, "edge-0").await;
        let unknown_ops = store.take();
        assert_error(s_foreign, &b_foreign, 404, "NOT_FOUND");
        assert_error(s_unknown, &b_unknown, 404, "NOT_FOUND");
        // the same words but for the id the caller gave
        assert_eq!(
            b_foreign["message"]
                .as_str()
                .unwrap()
                .replace("edge-1", "ID"),
            b_unknown["message"]
                .as_str()
                .unwrap()
                .replace("edge-0", "ID"),
            "{route:?}"
        );
        assert_eq!(foreign_ops, vec!["GetItem".to_string()], "{route:?}");
        assert_eq!(unknown_ops, foreign_ops, "{route:?}");
    }
    // nothing was recorded on alice's proxy
    let (_, body) = h.daily(&alice, "edge-1", &today()).await;
    assert_eq!(body["metrics"]["eventCount"], 0);
}
