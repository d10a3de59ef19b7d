//! Key types and sources: algorithms, JWKS selection and parsing, configuration.

use std::time::Duration;

use super::*;

#[tokio::test]
async fn only_the_configured_key_types_algorithms_are_accepted() {
    let c = claims(json!({}));
    // RS/ES tokens against an HS config
    let hs_auth = hs();
    assert_401(
        &hs_auth,
        &sign(Algorithm::RS256, Some("rsa-1"), RSA_1, &c),
        "RS vs HS",
    )
    .await;
    assert_401(
        &hs_auth,
        &sign(Algorithm::ES256, Some("ec-1"), EC_1, &c),
        "ES vs HS",
    )
    .await;
    // HS384 with the right secret is still another algorithm
    assert_401(&hs_auth, &sign(Algorithm::HS384, None, SECRET, &c), "HS384").await;
    // HS tokens against a JWKS config, even though JWT_SECRET is set
    let auth = jwks_auth();
    assert_401(
        &auth,
        &sign(Algorithm::HS256, None, SECRET, &c),
        "HS vs JWKS",
    )
    .await;
    assert_401(
        &auth,
        &sign(Algorithm::HS256, Some("rsa-1"), SECRET, &c),
        "HS kid",
    )
    .await;
    // key confusion: HMAC keyed with the RSA public key's own JWK text
    let public = serde_json::to_string(&jwk(Some("rsa-1"), Algorithm::RS256, RSA_1)).unwrap();
    assert_401(
        &auth,
        &sign(Algorithm::HS256, Some("rsa-1"), &public, &c),
        "confusion",
    )
    .await;
    // the token's alg must be its key's
    assert_401(
        &auth,
        &sign(Algorithm::ES256, Some("rsa-1"), EC_1, &c),
        "ES on RSA kid",
    )
    .await;
    assert_401(
        &auth,
        &sign(Algorithm::RS256, Some("ec-1"), RSA_1, &c),
        "RS on EC kid",
    )
    .await;
    assert_401(
        &auth,
        &sign(Algorithm::PS256, Some("rsa-1"), RSA_1, &c),
        "PS256",
    )
    .await;
    assert_401(
        &auth,
        &sign(Algorithm::RS384, Some("rsa-1"), RSA_1, &c),
        "RS384",
    )
    .await;
}

#[tokio::test]
async fn jwks_keys_are_chosen_by_kid() {
    let auth = jwks_auth();
    let c = claims(json!({"tier": "pro"}));
    for (kid, alg, pem) in [
        ("rsa-1", Algorithm::RS256, RSA_1),
        ("rsa-2", Algorithm::RS256, RSA_2),
        ("ec-1", Algorithm::ES256, EC_1),
    ] {
        let caller = check(&auth, &sign(alg, Some(kid), pem, &c)).await;
        assert_eq!(caller.unwrap().tier, Tier::Pro, "{kid}");
    }
    // signed by rsa-2 but naming rsa-1: bad signature
    assert_401(
        &auth,
        &sign(Algorithm::RS256, Some("rsa-1"), RSA_2, &c),
        "wrong kid",
    )
    .await;
    assert_401(
        &auth,
        &sign(Algorithm::RS256, Some("rsa-9"), RSA_1, &c),
        "unknown kid",
    )
    .await;
    // several keys: a token must name one
    assert_401(&auth, &sign(Algorithm::RS256, None, RSA_1, &c), "no kid").await;
}

#[tokio::test]
async fn a_single_key_jwks_takes_tokens_without_kid() {
    let c = claims(json!({}));
    let named = authenticator(&[(
        "JWT_JWKS",
        &jwks(vec![jwk(Some("k1"), Algorithm::ES256, EC_1)]),
    )]);
    assert!(
        check(&named, &sign(Algorithm::ES256, None, EC_1, &c))
            .await
            .is_ok()
    );
    assert!(
        check(&named, &sign(Algorithm::ES256, Some("k1"), EC_1, &c))
            .await
            .is_ok()
    );
    assert_401(
        &named,
        &sign(Algorithm::ES256, Some("k2"), EC_1, &c),
        "other kid",
    )
    .await;
    let unnamed = authenticator(&[("JWT_JWKS", &jwks(vec![jwk(None, Algorithm::RS256, RSA_1)]))]);
    assert!(
        check(&unnamed, &sign(Algorithm::RS256, None, RSA_1, &c))
            .await
            .is_ok()
    );
    assert!(
        check(&unnamed, &sign(Algorithm::RS256, Some("x"), RSA_1, &c))
            .await
            .is_ok()
    );
    assert_401(
        &unnamed,
        &sign(Algorithm::RS256, None, RSA_2, &c),
        "other key",
    )
    .await;
}

fn config_error(vars: &[(&str, &str)]) -> String {
    match config(vars) {
        Err(e) => e.to_string(),
        Ok(c) => panic!(
            "expected a config error for {vars:?}, got {:?}",
            c.auth.keys
        ),
    }
}

#[test]
fn config_errors_stop_start_up() {
    assert!(config_error(&[]).contains("no token key"));
    assert!(config_error(&[("JWT_SECRET", "short")]).contains("16 characters"));
    assert!(config_error(&[("JWT_JWKS", "{not json")]).contains("JWT_JWKS"));
    assert!(config_error(&[("JWT_JWKS", "{\"keys\": []}")]).contains("no usable"));
    assert!(config_error(&[("JWT_JWKS", "[1,2]")]).contains("not a JWKS"));
    let oct = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ", "kid": "h"}]});
    assert!(config_error(&[("JWT_JWKS", &oct.to_string())]).contains("symmetric"));
    let rs = jwks(vec![jwk(Some("a"), Algorithm::RS256, RSA_1)]);
    assert!(
        config_error(&[
            ("JWT_JWKS", &rs),
            ("JWT_JWKS_URL", "https://idp.example/jwks")
        ])
        .contains("not both")
    );
    for url in [
        "not a url",
        "ftp://idp.example/jwks",
        "http://idp.example/jwks",
        "https://",
    ] {
        assert!(
            config_error(&[("JWT_JWKS_URL", url)]).contains("JWT_JWKS_URL"),
            "{url}"
        );
    }
    // duplicate kids are ambiguous
    let dup = jwks(vec![
        jwk(Some("a"), Algorithm::RS256, RSA_1),
        jwk(Some("a"), Algorithm::RS256, RSA_2),
    ]);
    assert!(config_error(&[("JWT_JWKS", &dup)]).contains("share"));
    // several keys, one without kid
    let unnamed = jwks(vec![
        jwk(Some("a"), Algorithm::RS256, RSA_1),
        jwk(None, Algorithm::RS256, RSA_2),
    ]);
    assert!(config_error(&[("JWT_JWKS", &unnamed)]).contains("kid"));
}

#[test]
fn config_accepts_each_key_source() {
    let c = config(&[("JWT_SECRET", SECRET)]).unwrap();
    assert!(matches!(c.auth.keys, KeySource::SharedSecret(_)));
    let rs = jwks(vec![jwk(Some("a"), Algorithm::RS256, RSA_1)]);
    let c = config(&[("JWT_JWKS", &rs), ("JWT_SECRET", "short")]).unwrap();
    assert!(
        matches!(c.auth.keys, KeySource::Jwks(_)),
        "JWKS wins; the secret is ignored"
    );
    for url in [
        "https://idp.example/.well-known/jwks.json",
        "http://127.0.0.1:8080/jwks",
        "http://localhost/jwks",
        "http://[::1]:9/jwks",
    ] {
        let c = config(&[("JWT_JWKS_URL", url), ("JWT_SECRET", SECRET)]).unwrap();
        assert!(
            matches!(&c.auth.keys, KeySource::JwksUrl(u) if u == url),
            "{url}"
        );
    }
    // debug output never shows key material
    let shown = format!("{:?}", config(&[("JWT_SECRET", SECRET)]).unwrap());
    assert!(!shown.contains(SECRET));
}

#[test]
fn unusable_jwks_keys_are_skipped_with_a_reason() {
    let mut enc = serde_json::to_value(jwk(Some("enc"), Algorithm::RS256, RSA_2)).unwrap();
    enc["use"] = json!("enc");
    let mut ps = serde_json::to_value(jwk(Some("ps"), Algorithm::RS256, RSA_2)).unwrap();
    ps["alg"] = json!("PS256");
    let mut short = serde_json::to_value(jwk(Some("short"), Algorithm::RS256, RSA_2)).unwrap();
    short["n"] = json!(b64(&[0xC1; 64])); // a 512-bit modulus
    let mut off_curve = serde_json::to_value(jwk(Some("bad-ec"), Algorithm::ES256, EC_1)).unwrap();
    off_curve["y"] = off_curve["x"].clone();
    let p384 = json!({"kty": "EC", "crv": "P-384", "kid": "p384",
        "x": b64(&[1; 48]), "y": b64(&[2; 48])});
    let okp = json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": b64(&[3; 32])});
    let good = serde_json::to_value(jwk(Some("good"), Algorithm::RS256, RSA_1)).unwrap();
    let doc = json!({"keys": [enc, ps, short, off_curve, p384, okp, {"kty": "weird"}, good]});
    let (set, skipped) = KeySet::from_jwks_json(doc.to_string().as_bytes()).unwrap();
    assert_eq!(set.len(), 1, "{skipped:?}");
    assert_eq!(skipped.len(), 7, "{skipped:?}");
    assert!(set.select(Some("good")).is_some());
}

#[test]
fn cache_control_sets_the_jwks_lifetime() {
    use hyper::header::HeaderValue;
    let age = |v: &str| cache_max_age(Some(&HeaderValue::from_str(v).unwrap()));
    assert_eq!(cache_max_age(None), DEFAULT_JWKS_MAX_AGE);
    assert_eq!(age("public, max-age=3600"), Duration::from_secs(3600));
    assert_eq!(age("max-age=5"), MIN_JWKS_MAX_AGE);
    assert_eq!(age("max-age=99999999"), MAX_JWKS_MAX_AGE);
    assert_eq!(age("no-cache"), MIN_JWKS_MAX_AGE);
    assert_eq!(age("no-store, max-age=600"), MIN_JWKS_MAX_AGE);
    assert_eq!(age("public"), DEFAULT_JWKS_MAX_AGE);
    assert_eq!(age("max-age=soon"), DEFAULT_JWKS_MAX_AGE);
}

#[test]
fn significant_bits_ignores_leading_zeros() {
    assert_eq!(significant_bits(&[]), 0);
    assert_eq!(significant_bits(&[0, 0]), 0);
    assert_eq!(significant_bits(&[1, 0, 1]), 17);
    assert_eq!(significant_bits(&[0, 0x80, 0]), 16);
}
