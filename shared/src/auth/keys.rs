//! Verification keys: where they come from (one source: a shared secret, an
//! inline JWKS or a JWKS URL) and how a JWKS's entries become keys.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey};

use crate::config::{ConfigError, Vars};

/// Where token signatures are checked against. Exactly one source is in use:
/// a configured JWKS (inline or by URL) wins over `JWT_SECRET`, which is then
/// ignored, so HS256 tokens are refused.
#[derive(Clone)]
pub enum KeySource {
    /// HS256 with a shared secret (`JWT_SECRET`).
    SharedSecret(Vec<u8>),
    /// RS256/ES256 against a JWKS given inline (`JWT_JWKS`), parsed at start-up.
    Jwks(Arc<KeySet>),
    /// RS256/ES256 against a JWKS fetched from `JWT_JWKS_URL` (on first use,
    /// then cached; see `remote_jwks.rs`).
    JwksUrl(String),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SharedSecret(_) => f.write_str("SharedSecret(<redacted>)"),
            Self::Jwks(set) => write!(f, "Jwks({set:?})"),
            Self::JwksUrl(url) => write!(f, "JwksUrl({url})"),
        }
    }
}

/// The shortest `JWT_SECRET` accepted.
pub const MIN_SECRET_CHARS: usize = 16;

/// The algorithms a shared secret verifies.
pub(super) const HS_ALGORITHMS: &[Algorithm] = &[Algorithm::HS256];
/// The algorithms a JWKS verifies (each key one of them, by its `kty`/`alg`).
pub(super) const JWKS_ALGORITHMS: &[Algorithm] = &[Algorithm::RS256, Algorithm::ES256];

/// One verification key: the algorithm it verifies is fixed by the key,
/// never chosen by the token.
pub struct VerifyingKey {
    pub(super) kid: Option<String>,
    pub(super) alg: Algorithm,
    pub(super) key: DecodingKey,
}

/// The keys tokens are checked against, and the algorithms they accept.
pub struct KeySet {
    keys: Vec<Arc<VerifyingKey>>,
    pub(super) accepted: &'static [Algorithm],
}

impl std::fmt::Debug for KeySet {
    /// Key ids and algorithms only: never key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.keys
                    .iter()
                    .map(|k| format!("{:?}/{:?}", k.kid.as_deref().unwrap_or("-"), k.alg)),
            )
            .finish()
    }
}

impl KeySet {
    /// HS256 with a shared secret. The token's `kid`, if any, is ignored.
    pub fn shared_secret(secret: &[u8]) -> Self {
        Self {
            keys: vec![Arc::new(VerifyingKey {
                kid: None,
                alg: Algorithm::HS256,
                key: DecodingKey::from_secret(secret),
            })],
            accepted: HS_ALGORITHMS,
        }
    }

    /// Parses a JWKS document (`{"keys": [...]}`) and keeps its RS256 and
    /// ES256 (P-256) signing keys. Keys of other types or algorithms, or meant
    /// for encryption, are skipped; their descriptions come back for the log.
    /// Fails when the document is not a JWKS, when two keys share a `kid`, or
    /// when no usable key remains.
    pub fn from_jwks_json(json: &[u8]) -> Result<(Self, Vec<String>), String> {
        let document: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| format!("not valid JSON ({e})"))?;
        let Some(entries) = document.get("keys").and_then(serde_json::Value::as_array) else {
            return Err("not a JWKS: expected an object with a \"keys\" array".into());
        };
        let mut keys: Vec<Arc<VerifyingKey>> = Vec::new();
        let mut skipped = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            match jwk_to_key(entry) {
                Ok(key) => {
                    if let Some(kid) = &key.kid
                        && keys.iter().any(|k| k.kid.as_ref() == Some(kid))
                    {
                        return Err(format!("two keys share the kid '{kid}'"));
                    }
                    keys.push(Arc::new(key));
                }
                Err(reason) => skipped.push(format!("keys[{index}]: {reason}")),
            }
        }
        // With several keys the token's kid chooses; a key without a kid
        // could never be chosen.
        if keys.len() > 1 && keys.iter().any(|k| k.kid.is_none()) {
            return Err("a JWKS with several usable keys must give each a 'kid'".into());
        }
        if keys.is_empty() {
            let reasons = if skipped.is_empty() {
                "the set is empty".to_string()
            } else {
                skipped.join("; ")
            };
            return Err(format!("no usable RS256 or ES256 signing key ({reasons})"));
        }
        Ok((
            Self {
                keys,
                accepted: JWKS_ALGORITHMS,
            },
            skipped,
        ))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key for a token's `kid`. A set of one key without a kid (a shared
    /// secret, or a single-key JWKS that names none) takes every token; a
    /// single key with a kid also takes a token without one. Otherwise the
    /// kids must match.
    pub(super) fn select(&self, kid: Option<&str>) -> Option<&Arc<VerifyingKey>> {
        match (self.keys.as_slice(), kid) {
            ([only], _) if only.kid.is_none() => Some(only),
            ([only], None) => Some(only),
            (_, None) => None,
            (keys, Some(kid)) => keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
        }
    }
}

/// One JWK to a verifying key, or why it is not usable.
fn jwk_to_key(entry: &serde_json::Value) -> Result<VerifyingKey, String> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};

    let jwk: Jwk = serde_json::from_value(entry.clone()).map_err(|e| format!("not a JWK ({e})"))?;
    let kid = jwk.common.key_id.clone();
    let name = kid.as_deref().unwrap_or("(no kid)");
    if let Some(usage) = &jwk.common.public_key_use
        && *usage != PublicKeyUse::Signature
    {
        return Err(format!("key {name} is not a signing key (use != sig)"));
    }
    let declared = jwk.common.key_algorithm;
    let (alg, key) = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            if !matches!(declared, None | Some(KeyAlgorithm::RS256)) {
                return Err(format!(
                    "key {name} is RSA for {declared:?}; only RS256 is accepted"
                ));
            }
            let key = DecodingKey::from_rsa_components(&rsa.n, &rsa.e)
                .map_err(|_| format!("key {name}: n/e are not base64url"))?;
            if let jsonwebtoken::DecodingKeyKind::RsaModulusExponent { n, e } = key.kind() {
                let bits = significant_bits(n);
                if !(2048..=4096).contains(&bits) {
                    return Err(format!(
                        "key {name}: a {bits}-bit RSA modulus; 2048 to 4096 bits are accepted"
                    ));
                }
                if significant_bits(e) < 2 {
                    return Err(format!("key {name}: the RSA exponent is not usable"));
                }
            }
            (Algorithm::RS256, key)
        }
        AlgorithmParameters::EllipticCurve(ec) => {
            if ec.curve != EllipticCurve::P256 {
                return Err(format!(
                    "key {name} is on {:?}; only P-256 (ES256) is accepted",
                    ec.curve
                ));
            }
            if !matches!(declared, None | Some(KeyAlgorithm::ES256)) {
                return Err(format!(
                    "key {name} is P-256 for {declared:?}; only ES256 is accepted"
                ));
            }
            let key = DecodingKey::from_ec_components(&ec.x, &ec.y)
                .map_err(|_| format!("key {name}: x/y are not base64url"))?;
            // The point must be on the curve: checked here, so that a broken
            // key is reported at load rather than failing every token.
            let valid = match key.kind() {
                // the uncompressed point, 04 || x || y
                jsonwebtoken::DecodingKeyKind::SecretOrDer(point) => {
                    aws_lc_rs::signature::ParsedPublicKey::new(
                        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
                        point,
                    )
                    .is_ok()
                }
                jsonwebtoken::DecodingKeyKind::RsaModulusExponent { .. } => false,
            };
            if !valid {
                return Err(format!("key {name}: not a valid P-256 public key"));
            }
            (Algorithm::ES256, key)
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err(format!(
                "key {name} is a symmetric (oct) key; a JWKS may hold only RS256/ES256 public keys"
            ));
        }
        _ => return Err(format!("key {name} has an unsupported key type")),
    };
    Ok(VerifyingKey { kid, alg, key })
}

/// Bits of a big-endian unsigned integer, leading zeros ignored.
pub(super) fn significant_bits(bytes: &[u8]) -> usize {
    match bytes.iter().position(|b| *b != 0) {
        Some(first) => (bytes.len() - first - 1) * 8 + (8 - bytes[first].leading_zeros() as usize),
        None => 0,
    }
}

/// Chooses and checks the one key source (see [`KeySource`]).
pub(super) fn key_source(vars: &Vars) -> Result<KeySource, ConfigError> {
    let secret = vars.get("JWT_SECRET");
    let source = match (vars.get("JWT_JWKS"), vars.get("JWT_JWKS_URL")) {
        (Some(_), Some(_)) => {
            return Err(ConfigError(
                "set JWT_JWKS or JWT_JWKS_URL, not both: a JWKS has one source".into(),
            ));
        }
        (Some(json), None) => {
            let (set, skipped) = KeySet::from_jwks_json(json.as_bytes())
                .map_err(|e| ConfigError(format!("JWT_JWKS is not a usable JWKS: {e}")))?;
            for reason in skipped {
                tracing::warn!(%reason, "JWT_JWKS: key skipped");
            }
            KeySource::Jwks(Arc::new(set))
        }
        (None, Some(url)) => KeySource::JwksUrl(check_jwks_url(&url)?),
        (None, None) => {
            let secret = secret.ok_or_else(|| {
                ConfigError(
                    "no token key configured: set JWT_SECRET (HS256), or JWT_JWKS / JWT_JWKS_URL (RS256/ES256)"
                        .into(),
                )
            })?;
            if secret.chars().count() < MIN_SECRET_CHARS {
                return Err(ConfigError(format!(
                    "JWT_SECRET must be at least {MIN_SECRET_CHARS} characters long"
                )));
            }
            return Ok(KeySource::SharedSecret(secret.into_bytes()));
        }
    };
    if secret.is_some() {
        tracing::warn!("JWT_SECRET is ignored: a JWKS is configured, so HS256 tokens are refused");
    }
    Ok(source)
}

/// `JWT_JWKS_URL` must be `https://`, or `http://` to a loopback host (local
/// stack and tests): keys fetched in clear text could be swapped on the way.
fn check_jwks_url(url: &str) -> Result<String, ConfigError> {
    let bad = |why: &str| ConfigError(format!("JWT_JWKS_URL '{url}' is not usable: {why}"));
    let parsed: hyper::Uri = url
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
    let host = parsed.host().ok_or_else(|| bad("it names no host"))?;
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme_str().unwrap_or("") {
        "https" => Ok(url.to_string()),
        "http" if loopback => Ok(url.to_string()),
        "http" => Err(bad(
            "it must use https:// (http:// is allowed for localhost only)",
        )),
        other => Err(bad(&format!("the scheme '{other}' is not http(s)"))),
    }
}
