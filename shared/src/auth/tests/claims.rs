//! Claim rules: subject, scope, proxies, tier, time, issuer, audience, headers.

use super::*;

#[tokio::test]
async fn hs256_token_gives_the_caller() {
    let caller = check(
        &hs(),
        &hs_token(json!({"tier": "enterprise", "scope": "metrics:read", "proxy_id": "edge-1"})),
    )
    .await
    .unwrap();
    assert_eq!(caller.user_id, "alice");
    assert_eq!(caller.tier, Tier::Enterprise);
    assert_eq!(caller.proxy_id.as_deref(), Some("edge-1"));
    assert!(caller.require_scope(Scope::MetricsRead).is_ok());
    assert!(matches!(
        caller.require_scope(Scope::MetricsWrite),
        Err(ApiError::Forbidden(_))
    ));
    assert!(caller.require_proxy("edge-1").is_ok());
    assert!(matches!(
        caller.require_proxy("edge-2"),
        Err(ApiError::Forbidden(_))
    ));
    // a kid means nothing to a shared secret
    let with_kid = sign(
        Algorithm::HS256,
        Some("whatever"),
        SECRET,
        &claims(json!({})),
    );
    assert!(check(&hs(), &with_kid).await.is_ok());
}

#[tokio::test]
async fn tiers_default_to_free_and_absent_scope_means_all() {
    // (a null here removes the claim: absent)
    for tier in [json!(null), json!("gold"), json!("PRO")] {
        let caller = check(&hs(), &hs_token(json!({"tier": tier})))
            .await
            .unwrap();
        assert_eq!(caller.tier, Tier::Free, "{tier}");
    }
    assert_401(&hs(), &hs_token(json!({"tier": 7})), "numeric tier").await;
    let caller = check(&hs(), &hs_token(json!({"tier": "pro"})))
        .await
        .unwrap();
    assert_eq!(caller.tier, Tier::Pro);
    for scope in [Scope::MetricsRead, Scope::MetricsWrite, Scope::ProxiesWrite] {
        assert!(caller.require_scope(scope).is_ok());
    }
    assert!(caller.require_proxy("any").is_ok());
    // an empty scope grants nothing
    let caller = check(&hs(), &hs_token(json!({"scope": ""}))).await.unwrap();
    assert!(caller.require_scope(Scope::MetricsRead).is_err());
}

#[tokio::test]
async fn malformed_scope_or_proxy_claims_are_refused_not_widened() {
    assert_401(
        &hs(),
        &hs_token(json!({"scope": ["metrics:read"]})),
        "array scope",
    )
    .await;
    assert_401(&hs(), &hs_token(json!({"proxy_id": 5})), "numeric proxy_id").await;
}

#[tokio::test]
async fn present_but_null_claims_are_refused_never_widened() {
    for claim in ["scope", "proxy_id", "sub", "tier"] {
        let mut claims = claims(json!({"scope": "metrics:read", "proxy_id": "edge-1"}));
        claims[claim] = Value::Null;
        let token = sign(Algorithm::HS256, None, SECRET, &claims);
        assert_401(&hs(), &token, &format!("{claim}: null")).await;
    }
    for (claim, value) in [
        ("scope", json!({})),
        ("sub", json!(["alice"])),
        ("proxy_id", json!(true)),
    ] {
        let mut claims = claims(json!({}));
        claims[claim] = value;
        let token = sign(Algorithm::HS256, None, SECRET, &claims);
        assert_401(&hs(), &token, claim).await;
    }
}

#[tokio::test]
async fn the_subject_is_at_most_256_bytes() {
    let longest = "é".repeat(128); // 256 bytes
    let caller = check(&hs(), &hs_token(json!({"sub": longest})))
        .await
        .unwrap();
    assert_eq!(caller.user_id.len(), MAX_SUBJECT_BYTES);
    assert_401(
        &hs(),
        &hs_token(json!({"sub": format!("{longest}x")})),
        "257 bytes",
    )
    .await;
}

#[tokio::test]
async fn header_problems_are_401() {
    let auth = hs();
    for header in [
        None,
        Some(String::new()),
        Some("Basic abc".into()),
        Some("Bearer ".into()),
        Some("Bearer not-a-jwt".into()),
        Some("Bearer a.b.c".into()),
        Some(format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1))),
    ] {
        assert!(
            matches!(
                auth.authenticate(header.as_deref()).await,
                Err(ApiError::Unauthorized(_))
            ),
            "{header:?}"
        );
    }
    let token = hs_token(json!({}));
    assert!(
        auth.authenticate(Some(&format!("bearer {token}")))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn forged_and_tampered_tokens_are_401() {
    let auth = hs();
    let forged = sign(
        Algorithm::HS256,
        None,
        "another-secret-0123456789",
        &claims(json!({})),
    );
    assert_401(&auth, &forged, "other secret").await;
    // claims swapped under a valid signature
    let good = hs_token(json!({}));
    let other = hs_token(json!({"sub": "mallory"}));
    let parts: Vec<&str> = good.split('.').collect();
    let other_parts: Vec<&str> = other.split('.').collect();
    let spliced = format!("{}.{}.{}", parts[0], other_parts[1], parts[2]);
    assert_401(&auth, &spliced, "spliced claims").await;
}

#[tokio::test]
async fn alg_none_is_never_accepted() {
    let c = claims(json!({}));
    for auth in [hs(), jwks_auth()] {
        for alg in ["none", "None", "NONE"] {
            assert_401(
                &auth,
                &unsigned_token(json!({"alg": alg, "typ": "JWT"}), &c),
                alg,
            )
            .await;
        }
        // an unsigned token dressed as HS256 / RS256
        for alg in ["HS256", "RS256"] {
            let t = unsigned_token(json!({"alg": alg, "kid": "rsa-1"}), &c);
            assert_401(&auth, &t, alg).await;
        }
    }
}

#[tokio::test]
async fn time_claims_are_checked_with_60s_leeway() {
    let auth = hs();
    let now = now();
    assert_401(&auth, &hs_token(json!({"exp": now - 120})), "expired").await;
    assert!(
        check(&auth, &hs_token(json!({"exp": now - 30})))
            .await
            .is_ok(),
        "leeway exp"
    );
    assert_401(&auth, &hs_token(json!({"nbf": now + 300})), "nbf").await;
    assert!(
        check(&auth, &hs_token(json!({"nbf": now + 30})))
            .await
            .is_ok(),
        "leeway nbf"
    );
    assert_401(&auth, &hs_token(json!({"iat": now + 300})), "iat future").await;
    assert!(
        check(&auth, &hs_token(json!({"iat": now + 30})))
            .await
            .is_ok(),
        "leeway iat"
    );
    assert_401(&auth, &hs_token(json!({"exp": null})), "no exp").await;
    assert_401(&auth, &hs_token(json!({"exp": "tomorrow"})), "string exp").await;
    assert_401(&auth, &hs_token(json!({"nbf": "later"})), "string nbf").await;
}

#[tokio::test]
async fn subject_is_required() {
    let auth = hs();
    assert_401(&auth, &hs_token(json!({"sub": null})), "no sub").await;
    assert_401(&auth, &hs_token(json!({"sub": ""})), "empty sub").await;
    assert_401(&auth, &hs_token(json!({"sub": 42})), "numeric sub").await;
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let auth = authenticator(&[
        ("JWT_SECRET", SECRET),
        ("JWT_ISSUER", "https://issuer.example"),
        ("JWT_AUDIENCE", "proxy-metrics"),
    ]);
    let ok = json!({"iss": "https://issuer.example", "aud": "proxy-metrics"});
    assert!(check(&auth, &hs_token(ok)).await.is_ok());
    let list = json!({"iss": "https://issuer.example", "aud": ["other", "proxy-metrics"]});
    assert!(check(&auth, &hs_token(list)).await.is_ok());
    for bad in [
        json!({"iss": "https://evil.example", "aud": "proxy-metrics"}),
        json!({"iss": "https://issuer.example", "aud": "other"}),
        json!({"aud": "proxy-metrics"}),
        json!({"iss": "https://issuer.example"}),
    ] {
        assert_401(&auth, &hs_token(bad.clone()), &bad.to_string()).await;
    }
    // not configured: not checked (an aud in the token is then ignored)
    assert!(
        check(&hs(), &hs_token(json!({"iss": "anyone"})))
            .await
            .is_ok()
    );
    assert!(
        check(&hs(), &hs_token(json!({"aud": "anyone"})))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn critical_headers_are_refused() {
    let mut header = Header::new(Algorithm::HS256);
    header.crit = Some(vec!["exp".into()]);
    let token = encode(
        &header,
        &claims(json!({})),
        &encoding_key(Algorithm::HS256, SECRET),
    )
    .unwrap();
    assert_401(&hs(), &token, "crit").await;
}
