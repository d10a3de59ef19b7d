//! The token checks: helpers shared by the claim tests and the key tests.

use std::collections::HashMap;

use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};

use super::keys::significant_bits;
use super::remote_jwks::cache_max_age;
use super::*;
use crate::app::Config;
use crate::clock::Clock;
use jsonwebtoken::Algorithm;

const SECRET: &str = "unit-test-secret-0123456789";
const RSA_1: &str = include_str!("../../../../tests/fixtures/rsa-1.pem");
const RSA_2: &str = include_str!("../../../../tests/fixtures/rsa-2.pem");
const EC_1: &str = include_str!("../../../../tests/fixtures/ec-1.pem");

fn encoding_key(alg: Algorithm, pem: &str) -> EncodingKey {
    match alg {
        Algorithm::RS256 | Algorithm::RS384 | Algorithm::PS256 => {
            EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()
        }
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        _ => EncodingKey::from_secret(pem.as_bytes()),
    }
}

/// The public JWK of a fixture key.
fn jwk(kid: Option<&str>, alg: Algorithm, pem: &str) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(&encoding_key(alg, pem), alg).unwrap();
    jwk.common.key_id = kid.map(str::to_string);
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk
}

fn jwks(keys: Vec<Jwk>) -> String {
    serde_json::to_string(&JwkSet { keys }).unwrap()
}

fn config(vars: &[(&str, &str)]) -> Result<Config, crate::config::ConfigError> {
    let mut map: HashMap<String, String> =
        HashMap::from([("TABLE_NAME".to_string(), "t".to_string())]);
    for (k, v) in vars {
        map.insert(k.to_string(), v.to_string());
    }
    Config::from_map(&map)
}

/// The instant every token test runs at (the checks read the clock, not the wall).
fn now() -> i64 {
    chrono::DateTime::parse_from_rfc3339("2028-02-29T23:58:00Z")
        .unwrap()
        .timestamp()
}

fn authenticator(vars: &[(&str, &str)]) -> Authenticator {
    let clock = Clock::pinned(chrono::DateTime::from_timestamp(now(), 0).unwrap());
    Authenticator::new(&config(vars).expect("config").auth, clock)
}

fn hs() -> Authenticator {
    authenticator(&[("JWT_SECRET", SECRET)])
}

/// RS256 `rsa-1`, RS256 `rsa-2`, ES256 `ec-1` — and a JWT_SECRET that must be ignored.
fn jwks_auth() -> Authenticator {
    let set = jwks(vec![
        jwk(Some("rsa-1"), Algorithm::RS256, RSA_1),
        jwk(Some("rsa-2"), Algorithm::RS256, RSA_2),
        jwk(Some("ec-1"), Algorithm::ES256, EC_1),
    ]);
    authenticator(&[("JWT_JWKS", &set), ("JWT_SECRET", SECRET)])
}

fn claims(extra: Value) -> Value {
    let now = now();
    let mut claims = json!({"sub": "alice", "exp": now + 3600, "iat": now});
    if let (Value::Object(c), Value::Object(e)) = (&mut claims, extra) {
        for (k, v) in e {
            if v.is_null() {
                c.remove(&k);
            } else {
                c.insert(k, v);
            }
        }
    }
    claims
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &str, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    encode(&header, claims, &encoding_key(alg, key)).unwrap()
}

fn hs_token(extra: Value) -> String {
    sign(Algorithm::HS256, None, SECRET, &claims(extra))
}

async fn check(auth: &Authenticator, token: &str) -> Result<Caller, ApiError> {
    auth.authenticate(Some(&format!("Bearer {token}"))).await
}

async fn assert_401(auth: &Authenticator, token: &str, why: &str) {
    match check(auth, token).await {
        Err(ApiError::Unauthorized(_)) => {}
        other => panic!("{why}: expected 401, got {other:?}"),
    }
}

fn b64(bytes: &[u8]) -> String {
    // base64url without padding, for hand-made tokens.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn unsigned_token(header: Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

mod claims;
mod keys;
