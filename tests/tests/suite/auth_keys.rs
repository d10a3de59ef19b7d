//! Token keys: HS256, RS256/ES256 from an inline JWKS or one served by a
//! local HTTP server (fetched lazily, cached, refreshed for a new kid, rate
//! limited, outliving a failing server for a day only), issuer, audience.

use crate::common;

use common::auth::*;
use common::*;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

#[tokio::test]
async fn jwks_url_is_fetched_lazily_cached_and_refreshed_for_a_new_kid() {
    let server = JwksServer::start(jwks(vec![jwk("rsa-1", Algorithm::RS256, RSA_1)])).await;
    // JWT_SECRET is set too (the harness always sets it): the JWKS is the only source.
    let h = Harness::start_with(&[("JWT_JWKS_URL", &server.url)]).await;
    assert_eq!(
        server.hits(),
        0,
        "nothing is fetched before the first request"
    );

    let (status, body) = call(
        &h.app,
        Route::Register,
        &rs("rsa-1", RSA_1, "alice"),
        "edge-1",
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(server.hits(), 1);
    for _ in 0..5 {
        assert_eq!(list_status(&h.app, &rs("rsa-1", RSA_1, "alice")).await, 200);
    }
    assert_eq!(server.hits(), 1, "cached: no fetch per request");

    // HS256 is refused even with the right JWT_SECRET, without any fetch.
    let (status, body) = call(&h.app, Route::List, &user_token("alice"), "").await;
    assert_error(status, &body, 401, "UNAUTHORIZED");
    assert_eq!(server.hits(), 1);

    // Rotation: the issuer publishes rsa-2 and ec-1 beside rsa-1.
    server.publish(
        200,
        jwks(vec![
            jwk("rsa-1", Algorithm::RS256, RSA_1),
            jwk("rsa-2", Algorithm::RS256, RSA_2),
            jwk("ec-1", Algorithm::ES256, EC_1),
        ]),
    );
    let (status, body) = call(&h.app, Route::List, &rs("rsa-2", RSA_2, "alice"), "").await;
    assert_eq!(status, 200, "a token with the new kid is accepted: {body}");
    assert_eq!(body["count"], 1);
    assert_eq!(server.hits(), 2, "one refresh for the unknown kid");
    assert_eq!(list_status(&h.app, &es("ec-1", EC_1, "alice")).await, 200);
    assert_eq!(list_status(&h.app, &rs("rsa-1", RSA_1, "alice")).await, 200);
    assert_eq!(server.hits(), 2);

    // Retiring rsa-1 at the issuer: cached keys stay in use until they expire.
    server.publish(200, jwks(vec![jwk("rsa-2", Algorithm::RS256, RSA_2)]));
    assert_eq!(list_status(&h.app, &rs("rsa-1", RSA_1, "alice")).await, 200);
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn unknown_kid_refresh_is_rate_limited() {
    let server = JwksServer::start(jwks(vec![jwk("rsa-1", Algorithm::RS256, RSA_1)])).await;
    let h = Harness::start_with(&[("JWT_JWKS_URL", &server.url)]).await;
    assert_eq!(list_status(&h.app, &rs("rsa-1", RSA_1, "alice")).await, 200);
    assert_eq!(server.hits(), 1);

    // A flood of tokens with kids the set lacks, sequential and concurrent:
    // one refetch at most in the minute.
    for i in 0..5 {
        let token = es(&format!("forged-{i}"), EC_2, "mallory");
        assert_eq!(list_status(&h.app, &token).await, 401);
    }
    let tokens: Vec<String> = (0..10)
        .map(|i| es(&format!("burst-{i}"), EC_2, "mallory"))
        .collect();
    let statuses = futures::future::join_all(tokens.iter().map(|t| list_status(&h.app, t))).await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(server.hits(), 2, "exactly one refresh for unknown kids");

    // Within that minute even a genuinely new key waits for the next refresh
    // (or the cache's expiry): the limit holds for everyone.
    server.publish(
        200,
        jwks(vec![
            jwk("rsa-1", Algorithm::RS256, RSA_1),
            jwk("ec-2", Algorithm::ES256, EC_2),
        ]),
    );
    assert_eq!(list_status(&h.app, &es("ec-2", EC_2, "alice")).await, 401);
    assert_eq!(server.hits(), 2);
    // The cached set still holds one key: a token without kid may use it (no fetch).
    let no_kid = sign(Algorithm::RS256, None, RSA_1, &claims("alice", json!({})));
    assert_eq!(list_status(&h.app, &no_kid).await, 200);
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn jwks_unavailable_at_first_use_is_a_503_to_retry_without_details() {
    let server = JwksServer::start(String::new()).await;
    server.publish(503, "upstream exploded at db-7.internal".into());
    let h = Harness::start_with(&[("JWT_JWKS_URL", &server.url)]).await;
    let (status, body, headers) =
        call_with_headers(&h.app, Route::List, &rs("rsa-1", RSA_1, "alice"), "").await;
    assert_error(status, &body, 503, "SERVICE_UNAVAILABLE");
    assert_eq!(headers.get("retry-after").map(String::as_str), Some("2"));
    let text = body.to_string();
    for leak in ["jwks", "127.0.0.1", "exploded", "JWKS"] {
        assert!(!text.contains(leak), "{leak} leaked: {text}");
    }
    assert_eq!(server.hits(), 1);
    // Backing off: the next request does not hammer the key server…
    server.publish(200, jwks(vec![jwk("rsa-1", Algorithm::RS256, RSA_1)]));
    let (status, _) = call(&h.app, Route::List, &rs("rsa-1", RSA_1, "alice"), "").await;
    assert_eq!(status, 503);
    assert_eq!(server.hits(), 1);
    // …and once the back-off has passed, the keys are fetched.
    h.app.clock.advance(chrono::Duration::seconds(11));
    let token = sign(
        Algorithm::RS256,
        Some("rsa-1"),
        RSA_1,
        &claims_at("alice", h.app.clock.now()),
    );
    assert_eq!(list_status(&h.app, &token).await, 200);
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn cached_keys_outlive_a_failing_key_server_for_a_day_only() {
    let server = JwksServer::start(jwks(vec![jwk("rsa-1", Algorithm::RS256, RSA_1)])).await;
    let h = Harness::start_with(&[("JWT_JWKS_URL", &server.url)]).await;
    let at = |h: &Harness| {
        sign(
            Algorithm::RS256,
            Some("rsa-1"),
            RSA_1,
            &claims_at("alice", h.app.clock.now()),
        )
    };
    assert_eq!(list_status(&h.app, &at(&h)).await, 200);
    // the key server goes down; the cache (10 min by default) expires
    server.publish(500, "down".into());
    h.app.clock.advance(chrono::Duration::minutes(11));
    assert_eq!(
        list_status(&h.app, &at(&h)).await,
        200,
        "stale keys serve meanwhile"
    );
    h.app.clock.advance(chrono::Duration::hours(23));
    assert_eq!(
        list_status(&h.app, &at(&h)).await,
        200,
        "still within a day of expiry"
    );
    // a day past the keys' lifetime: a key removed from the JWKS must stop
    // working even though nothing could be fetched
    h.app.clock.advance(chrono::Duration::hours(2));
    let (status, body, headers) = call_with_headers(&h.app, Route::List, &at(&h), "").await;
    assert_error(status, &body, 503, "SERVICE_UNAVAILABLE");
    assert!(headers.contains_key("retry-after"));
    // the server is back: keys again
    server.publish(200, jwks(vec![jwk("rsa-1", Algorithm::RS256, RSA_1)]));
    h.app.clock.advance(chrono::Duration::seconds(11));
    assert_eq!(list_status(&h.app, &at(&h)).await, 200);
}

#[tokio::test]
async fn inline_jwks_accepts_rs256_and_es256_only() {
    let set = jwks(vec![
        jwk("rsa-1", Algorithm::RS256, RSA_1),
        jwk("ec-1", Algorithm::ES256, EC_1),
    ]);
    let h = Harness::start_with(&[("JWT_JWKS", &set)]).await;
    assert_eq!(list_status(&h.app, &rs("rsa-1", RSA_1, "alice")).await, 200);
    assert_eq!(list_status(&h.app, &es("ec-1", EC_1, "alice")).await, 200);
    let c = claims("alice", json!({}));
    for (why, token) in [
        ("HS256 with the JWT_SECRET", user_token("alice")),
        (
            "HS256 naming an RSA kid",
            sign(Algorithm::HS256, Some("rsa-1"), SECRET.as_bytes(), &c),
        ),
        ("signed by an unpublished key", rs("rsa-1", RSA_2, "alice")),
        ("ES256 on the RSA kid", es("rsa-1", EC_1, "alice")),
        ("RS256 on the EC kid", rs("ec-1", RSA_1, "alice")),
        ("unknown kid", rs("rsa-9", RSA_1, "alice")),
        ("no kid, two keys", sign(Algorithm::RS256, None, RSA_1, &c)),
        (
            "alg none",
            unsigned(json!({"alg": "none", "kid": "rsa-1"}), &c),
        ),
        (
            "unsigned RS256",
            unsigned(json!({"alg": "RS256", "kid": "rsa-1"}), &c),
        ),
    ] {
        let (status, body) = call(&h.app, Route::List, &token, "").await;
        assert_eq!(status, 401, "{why}: {body}");
        assert_error(status, &body, 401, "UNAUTHORIZED");
    }
}

#[tokio::test]
async fn hs256_config_refuses_other_algorithms_and_bad_tokens() {
    let h = Harness::start().await;
    let now = now().timestamp();
    let hs = |extra: Value| token("alice", extra);
    let c = claims("alice", json!({}));
    let forged = sign(Algorithm::HS256, None, b"not-the-secret-0123456789", &c);
    for (why, token) in [
        ("forged signature", forged),
        ("RS256 token", rs("rsa-1", RSA_1, "alice")),
        ("ES256 token", es("ec-1", EC_1, "alice")),
        ("alg none", unsigned(json!({"alg": "none"}), &c)),
        (
            "alg none, typ JWT",
            unsigned(json!({"alg": "none", "typ": "JWT"}), &c),
        ),
        ("expired", hs(json!({"exp": now - 3600}))),
        ("not yet valid", hs(json!({"nbf": now + 3600}))),
        ("issued in the future", hs(json!({"iat": now + 3600}))),
        ("missing sub", hs(json!({"sub": null}))),
        ("missing exp", hs(json!({"exp": null}))),
        ("empty sub", hs(json!({"sub": ""}))),
    ] {
        let (status, body) = call(&h.app, Route::List, &token, "").await;
        assert_eq!(status, 401, "{why}: {body}");
        assert_error(status, &body, 401, "UNAUTHORIZED");
    }
    // within the 60 s leeway
    assert_eq!(
        list_status(&h.app, &hs(json!({"exp": now - 20}))).await,
        200
    );
    assert_eq!(
        list_status(&h.app, &hs(json!({"nbf": now + 20}))).await,
        200
    );
}

#[tokio::test]
async fn issuer_and_audience_are_enforced_when_configured() {
    let h = Harness::start_with(&[
        ("JWT_ISSUER", "https://issuer.example"),
        ("JWT_AUDIENCE", "proxy-metrics"),
    ])
    .await;
    let right = json!({"iss": "https://issuer.example", "aud": "proxy-metrics"});
    assert_eq!(list_status(&h.app, &token("alice", right)).await, 200);
    for wrong in [
        json!({"iss": "https://evil.example", "aud": "proxy-metrics"}),
        json!({"iss": "https://issuer.example", "aud": "another-api"}),
        json!({"aud": "proxy-metrics"}),
        json!({"iss": "https://issuer.example"}),
    ] {
        let (status, body) = call(&h.app, Route::List, &token("alice", wrong.clone()), "").await;
        assert_eq!(status, 401, "{wrong}: {body}");
    }
}
