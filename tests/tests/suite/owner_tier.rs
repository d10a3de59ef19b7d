//! Finding 12 of issue 20 (the token half): a proxy keeps its owner's tier
//! (it sets raw retention), and only the owner's user token says what that
//! is. A proxy-scoped token's `tier` claim never becomes the owner's tier —
//! not when it registers its proxy, not when it records.
use crate::common;

use common::*;
use proxy_metrics::domain::tier::Tier;
use serde_json::json;

fn proxy_token(sub: &str, proxy_id: &str, tier: &str) -> String {
    token(
        sub,
        json!({"proxy_id": proxy_id, "tier": tier, "scope": "proxies:write metrics:write"}),
    )
}

async fn stored_tier(h: &Harness, proxy_id: &str) -> Tier {
    h.app
        .store
        .get_proxy(proxy_id)
        .await
        .unwrap()
        .expect("registered")
        .tier
}

#[tokio::test]
async fn a_proxy_token_registering_its_proxy_does_not_set_the_owners_tier() {
    let h = Harness::start().await;
    // an owner with no proxy yet: the default tier, not the token's
    let (s, b) = h
        .register(&proxy_token("carol", "carol-1", "enterprise"), "carol-1")
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(stored_tier(&h, "carol-1").await, Tier::Free);
    // an owner whose user token recorded pro on another proxy: pro
    let owner = token("dave", json!({"tier": "pro"}));
    assert_eq!(h.register(&owner, "dave-1").await.0, 201);
    assert_eq!(stored_tier(&h, "dave-1").await, Tier::Pro);
    for claimed in ["enterprise", "free"] {
        let id = format!("dave-{claimed}");
        assert_eq!(
            h.register(&proxy_token("dave", &id, claimed), &id).await.0,
            201
        );
        assert_eq!(stored_tier(&h, &id).await, Tier::Pro, "{claimed} claimed");
    }
    // the proxy's own token recording leaves it alone ...
    let rec = json!({"eventType": "request", "metrics": {"requestCount": 1}});
    let (s, b) = h
        .record(&proxy_token("dave", "dave-free", "free"), "dave-free", rec)
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(stored_tier(&h, "dave-free").await, Tier::Pro);
    // ... and the owner's user token of another tier updates it
    let upgraded = token("dave", json!({"tier": "enterprise"}));
    assert_eq!(h.daily(&upgraded, "dave-free", &today()).await.0, 200);
    assert_eq!(stored_tier(&h, "dave-free").await, Tier::Enterprise);
}

#[tokio::test]
async fn a_user_token_registering_records_its_tier() {
    let h = Harness::start().await;
    let owner = token("erin", json!({"tier": "enterprise"}));
    assert_eq!(h.register(&owner, "erin-1").await.0, 201);
    assert_eq!(stored_tier(&h, "erin-1").await, Tier::Enterprise);
}
