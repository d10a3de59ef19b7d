//! Bearer-token verification and what a verified caller may do.
//!
//! Keys come from exactly one source (see `config.rs`): an HS256 shared secret,
//! or a JWKS (inline or by URL) holding RS256 and ES256 public keys. The
//! algorithm a token is checked with is the one its key is for: the token's
//! `alg` header must agree with it, and `none` never parses. A JWKS fetched by
//! URL is cached per warm container; after that, authenticating makes no
//! network call.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::Deserialize;

use crate::clock::Clock;
use crate::config::{AuthConfig, KeySource};
use crate::error::ApiError;

/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY_SECONDS: u64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Free,
    Pro,
    Enterprise,
}

impl Tier {
    /// Unknown or absent tiers count as `free`: a typo must never grant more.
    pub fn from_claim(claim: Option<&str>) -> Self {
        match claim {
            Some("pro") => Self::Pro,
            Some("enterprise") => Self::Enterprise,
            _ => Self::Free,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Pro => "pro",
            Self::Enterprise => "enterprise",
        }
    }

    /// Longest `daily` range or `aggregation` period, both ends inclusive.
    pub fn max_range_days(self) -> i64 {
        match self {
            Self::Free => 31,
            Self::Pro => 366,
            Self::Enterprise => 3660,
        }
    }

    /// How long raw events are kept (DynamoDB TTL); daily rollups are kept.
    pub fn raw_retention_days(self) -> i64 {
        match self {
            Self::Free => 7,
            Self::Pro => 30,
            Self::Enterprise => 90,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    MetricsWrite,
    MetricsRead,
    ProxiesWrite,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MetricsWrite => "metrics:write",
            Self::MetricsRead => "metrics:read",
            Self::ProxiesWrite => "proxies:write",
        }
    }
}

/// A caller whose token has been verified.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: String,
    pub tier: Tier,
    scopes: Option<HashSet<String>>,
    /// Set for a token handed to one proxy: it may act on that proxy only.
    pub proxy_id: Option<String>,
}

impl Caller {
    /// A user token with every scope (used by tests and tools).
    pub fn user(user_id: impl Into<String>, tier: Tier) -> Self {
        Self {
            user_id: user_id.into(),
            tier,
            scopes: None,
            proxy_id: None,
        }
    }

    pub fn require_scope(&self, scope: Scope) -> Result<(), ApiError> {
        match &self.scopes {
            Some(granted) if !granted.contains(scope.as_str()) => Err(ApiError::Forbidden(
                format!("This token lacks the '{}' scope.", scope.as_str()),
            )),
            _ => Ok(()),
        }
    }

    /// A proxy-scoped token may act on its own proxy only; decided before any
    /// ownership lookup so it reveals nothing about other proxies.
    pub fn require_proxy(&self, proxy_id: &str) -> Result<(), ApiError> {
        match &self.proxy_id {
            Some(own) if own != proxy_id => Err(ApiError::Forbidden(
                "This token is limited to another proxy.".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// The claims this service reads. `iss` and `aud` are checked by `jsonwebtoken`
/// itself (see [`validation`]); the time claims against the service's clock.
///
/// The claims that narrow or name the caller are kept as raw JSON when
/// present (`present`), so that a claim sent as `null` or with the wrong type
/// is told apart from an absent one: it is a 401, never a wider token
/// (`"scope": null` is not "all scopes", `"proxy_id": null` is not "any proxy").
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default, deserialize_with = "present")]
    sub: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    tier: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    scope: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    proxy_id: Option<serde_json::Value>,
    /// Required (checked by `jsonwebtoken`); a number, or the token is malformed.
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    nbf: Option<f64>,
    #[serde(default)]
    iat: Option<f64>,
}

/// Tokens longer than this are refused before any parsing (API Gateway caps
/// headers well above any real JWT; this keeps hostile input cheap).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// A fetched JWKS is cached this long when its response sets no `max-age`.
pub const DEFAULT_JWKS_MAX_AGE: Duration = Duration::from_secs(600);
/// Bounds on an honoured `Cache-Control: max-age`; `no-cache` and `no-store`
/// get the lower bound.
pub const MIN_JWKS_MAX_AGE: Duration = Duration::from_secs(60);
pub const MAX_JWKS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// A token naming an unknown `kid` triggers a refetch at most this often.
pub const UNKNOWN_KID_REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// After a failed fetch, no new attempt is made for this long (stale keys, if
/// any, keep being used meanwhile).
pub const FAILED_FETCH_BACKOFF: Duration = Duration::from_secs(10);
/// How long cached keys stay in use past their lifetime while the key server
/// cannot be reached; after that requests get 503, so that a key removed from
/// the JWKS stops working even if its server is down.
pub const STALE_JWKS_GRACE: Duration = Duration::from_secs(24 * 3600);
/// Largest JWKS document accepted from `JWT_JWKS_URL`.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Timeouts of the JWKS fetch (a Lambda's budget is seconds, not minutes).
const JWKS_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const JWKS_TOTAL_TIMEOUT: Duration = Duration::from_secs(5);

/// The algorithms a shared secret verifies.
const HS_ALGORITHMS: &[Algorithm] = &[Algorithm::HS256];
/// The algorithms a JWKS verifies (each key one of them, by its `kty`/`alg`).
const JWKS_ALGORITHMS: &[Algorithm] = &[Algorithm::RS256, Algorithm::ES256];

/// One verification key: the algorithm it verifies is fixed by the key,
/// never chosen by the token.
pub struct VerifyingKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// The keys tokens are checked against, and the algorithms they accept.
pub struct KeySet {
    keys: Vec<Arc<VerifyingKey>>,
    accepted: &'static [Algorithm],
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
    fn select(&self, kid: Option<&str>) -> Option<&Arc<VerifyingKey>> {
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
fn significant_bits(bytes: &[u8]) -> usize {
    match bytes.iter().position(|b| *b != 0) {
        Some(first) => (bytes.len() - first - 1) * 8 + (8 - bytes[first].leading_zeros() as usize),
        None => 0,
    }
}

/// Where keys come from at run time.
enum Keys {
    /// A shared secret or an inline JWKS: fixed for the container's life.
    Fixed(Arc<KeySet>),
    /// `JWT_JWKS_URL`: fetched on first use, cached, refreshed.
    Remote(Box<RemoteJwks>),
}

/// Verifies bearer tokens against the configured keys. Built once per container.
pub struct Authenticator {
    keys: Keys,
    /// One validation per accepted algorithm: the algorithm list always holds
    /// exactly the chosen key's algorithm.
    validations: Vec<(Algorithm, Validation)>,
    /// `exp`, `nbf` and `iat` are checked against this clock.
    clock: Clock,
}

impl Authenticator {
    pub fn new(config: &AuthConfig, clock: Clock) -> Self {
        let keys = match &config.keys {
            KeySource::SharedSecret(secret) => Keys::Fixed(Arc::new(KeySet::shared_secret(secret))),
            KeySource::Jwks(set) => Keys::Fixed(Arc::clone(set)),
            KeySource::JwksUrl(url) => Keys::Remote(Box::new(RemoteJwks::new(url, clock.clone()))),
        };
        let validations = [Algorithm::HS256, Algorithm::RS256, Algorithm::ES256]
            .into_iter()
            .map(|alg| (alg, validation(alg, config)))
            .collect();
        Self {
            keys,
            validations,
            clock,
        }
    }

    /// The algorithms the configured key type accepts.
    fn accepted(&self) -> &'static [Algorithm] {
        match &self.keys {
            Keys::Fixed(set) => set.accepted,
            Keys::Remote(_) => JWKS_ALGORITHMS,
        }
    }

    /// Checks the `Authorization` header value and returns the caller. Once
    /// the keys are cached (always, for a secret or an inline JWKS) this makes
    /// no network call.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, ApiError> {
        let header = authorization
            .ok_or_else(|| ApiError::Unauthorized("Missing Authorization header.".into()))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthorized("Authorization must be 'Bearer <token>'.".into())
            })?;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(ApiError::Unauthorized("The token is too long.".into()));
        }
        // The header is read (not trusted) to pick the key; `none` and any
        // unknown algorithm fail to parse here.
        let jwt_header = jsonwebtoken::decode_header(token).map_err(|_| {
            ApiError::Unauthorized(
                "The token is malformed or its signing algorithm is not accepted.".into(),
            )
        })?;
        if jwt_header.crit.is_some() {
            return Err(ApiError::Unauthorized(
                "The token uses critical header extensions, which are not supported.".into(),
            ));
        }
        if !self.accepted().contains(&jwt_header.alg) {
            return Err(ApiError::Unauthorized(
                "The token's signing algorithm is not accepted.".into(),
            ));
        }
        let key = self.key_for(jwt_header.kid.as_deref()).await?;
        if key.alg != jwt_header.alg {
            return Err(ApiError::Unauthorized(
                "The token's signing algorithm is not accepted for its key.".into(),
            ));
        }
        let validation = self
            .validations
            .iter()
            .find(|(alg, _)| *alg == key.alg)
            .map(|(_, v)| v)
            .ok_or_else(|| ApiError::Internal(format!("no validation for {:?}", key.alg)))?;
        let data = decode::<Claims>(token, &key.key, validation)
            .map_err(|e| ApiError::Unauthorized(describe_jwt_error(&e)))?;
        let claims = data.claims;
        check_time_claims(&claims, self.clock.now().timestamp())?;
        let user_id = string_claim("sub", claims.sub)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::Unauthorized("The token has no subject (sub).".into()))?;
        // The user id becomes part of storage keys: bounded well under
        // DynamoDB's key limits.
        if user_id.len() > MAX_SUBJECT_BYTES {
            return Err(ApiError::Unauthorized(format!(
                "The token's subject (sub) is longer than {MAX_SUBJECT_BYTES} bytes."
            )));
        }
        Ok(Caller {
            user_id,
            tier: Tier::from_claim(string_claim("tier", claims.tier)?.as_deref()),
            scopes: string_claim("scope", claims.scope)?
                .map(|s| s.split_whitespace().map(str::to_string).collect()),
            proxy_id: string_claim("proxy_id", claims.proxy_id)?,
        })
    }

    /// The key a token's `kid` names.
    async fn key_for(&self, kid: Option<&str>) -> Result<Arc<VerifyingKey>, ApiError> {
        let unknown = || {
            ApiError::Unauthorized(match kid {
                Some(_) => "The token's signing key (kid) is not known.".into(),
                None => "The token names no signing key (kid).".into(),
            })
        };
        match &self.keys {
            Keys::Fixed(set) => set.select(kid).cloned().ok_or_else(unknown),
            Keys::Remote(remote) => {
                let set = remote.current().await?;
                if let Some(key) = set.select(kid) {
                    return Ok(Arc::clone(key));
                }
                // A kid we have not seen may be a freshly rotated key.
                match kid {
                    Some(_) => match remote.refresh_for_unknown_kid(&set).await {
                        Some(newer) => newer.select(kid).cloned().ok_or_else(unknown),
                        None => Err(unknown()),
                    },
                    None => Err(unknown()),
                }
            }
        }
    }
}

/// The longest `sub` accepted, in bytes (the contract's 256).
pub const MAX_SUBJECT_BYTES: usize = 256;

/// Keeps a claim's value when the claim is present, even as `null`.
fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(deserializer).map(Some)
}

/// A claim that must be a string when present: absent is `None`; `null` or
/// another type is a 401.
fn string_claim(name: &str, value: Option<serde_json::Value>) -> Result<Option<String>, ApiError> {
    match value {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::Unauthorized(format!(
            "The token's '{name}' claim must be a string."
        ))),
    }
}

/// `exp`, `nbf` and `iat` against `now` (seconds), with [`LEEWAY_SECONDS`].
/// Checked here rather than by `jsonwebtoken`, which reads the system clock.
fn check_time_claims(claims: &Claims, now: i64) -> Result<(), ApiError> {
    let now = now as f64;
    let leeway = LEEWAY_SECONDS as f64;
    let exp = claims.exp.ok_or_else(|| {
        ApiError::Unauthorized("The token lacks the required 'exp' claim.".into())
    })?;
    if exp < now - leeway {
        return Err(ApiError::Unauthorized("The token has expired.".into()));
    }
    if claims.nbf.is_some_and(|nbf| nbf > now + leeway) {
        return Err(ApiError::Unauthorized(
            "The token is not valid yet (nbf).".into(),
        ));
    }
    // `iat` is honoured: a token issued in the future (beyond the leeway) is refused.
    if claims.iat.is_some_and(|iat| iat > now + leeway) {
        return Err(ApiError::Unauthorized(
            "The token was issued in the future (iat).".into(),
        ));
    }
    Ok(())
}

/// The checks every token gets, for one algorithm.
fn validation(alg: Algorithm, config: &AuthConfig) -> Validation {
    let mut validation = Validation::new(alg);
    validation.algorithms = vec![alg];
    // Time claims are checked against the service's clock (check_time_claims).
    validation.validate_exp = false;
    validation.validate_nbf = false;
    let mut required = vec!["exp", "sub"];
    // jsonwebtoken checks iss/aud only when present: make them required when configured.
    match &config.audience {
        Some(aud) => {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    if let Some(iss) = &config.issuer {
        validation.set_issuer(&[iss]);
        required.push("iss");
    }
    validation.set_required_spec_claims(&required);
    validation
}

fn describe_jwt_error(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "The token has expired.".into(),
        ErrorKind::ImmatureSignature => "The token is not valid yet (nbf).".into(),
        ErrorKind::InvalidSignature => "The token signature is invalid.".into(),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "The token's signing algorithm is not accepted.".into()
        }
        ErrorKind::InvalidIssuer => "The token's issuer is not accepted.".into(),
        ErrorKind::InvalidAudience => "The token's audience is not accepted.".into(),
        ErrorKind::MissingRequiredClaim(claim) => {
            format!("The token lacks the required '{claim}' claim.")
        }
        ErrorKind::InvalidClaimFormat(claim) => {
            format!("The token's '{claim}' claim is malformed.")
        }
        _ => "The token is malformed.".into(),
    }
}

/// A JWKS fetched from a URL, cached per warm container.
struct RemoteJwks {
    url: String,
    /// Built at start-up (only when a JWKS URL is configured: HS256 and
    /// inline-JWKS deployments never load the system's roots); an error (no
    /// usable root certificates) is reported on first use.
    client: Result<JwksClient, String>,
    state: Mutex<RemoteState>,
    /// One fetch at a time; others wait for its result instead of fetching too.
    fetching: tokio::sync::Mutex<()>,
    /// Lifetimes and back-offs are read against the service's clock.
    clock: Clock,
}

fn chrono_span(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[derive(Default)]
struct RemoteState {
    keys: Option<Arc<KeySet>>,
    /// When the cached set should be fetched again.
    expires_at: Option<DateTime<Utc>>,
    /// After a failure: no new attempt before this.
    retry_at: Option<DateTime<Utc>>,
    /// The last refetch caused by an unknown kid (rate-limited).
    last_unknown_kid_refresh: Option<DateTime<Utc>>,
}

impl RemoteState {
    /// Cached keys past their lifetime, while still within
    /// [`STALE_JWKS_GRACE`] of it (refetches failing meanwhile).
    fn stale(&self, now: DateTime<Utc>) -> Option<Arc<KeySet>> {
        match (&self.keys, self.expires_at) {
            (Some(keys), Some(at)) if now < at + chrono_span(STALE_JWKS_GRACE) => {
                Some(Arc::clone(keys))
            }
            _ => None,
        }
    }
}

impl RemoteJwks {
    fn new(url: &str, clock: Clock) -> Self {
        let client = jwks_client();
        if let Err(e) = &client {
            tracing::error!(error = %e, "JWKS client unavailable");
        }
        Self {
            url: url.to_string(),
            client,
            state: Mutex::new(RemoteState::default()),
            fetching: tokio::sync::Mutex::new(()),
            clock,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, RemoteState> {
        // The state is a few plain fields, valid after any panic: ignore poisoning.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Cached keys while fresh; otherwise one fetch (others wait for it).
    /// A failed refetch keeps the stale keys in use.
    async fn current(&self) -> Result<Arc<KeySet>, ApiError> {
        if let Some(fresh) = self.fresh() {
            return Ok(fresh);
        }
        let _one_fetch = self.fetching.lock().await;
        if let Some(fresh) = self.fresh() {
            return Ok(fresh);
        }
        let now = self.clock.now();
        {
            let state = self.state();
            if state.retry_at.is_some_and(|at| now < at) {
                return state.stale(now).ok_or_else(|| {
                    ApiError::ServiceUnavailable(
                        "the JWKS could not be fetched recently; backing off".into(),
                    )
                });
            }
        }
        match self.fetch().await {
            Ok(set) => Ok(set),
            Err(error) => {
                let stale = self.state().stale(self.clock.now());
                match stale {
                    Some(keys) => {
                        tracing::warn!(url = %self.url, %error, "JWKS refresh failed; using the cached keys");
                        Ok(keys)
                    }
                    // No keys at a cold start, or keys too long past their
                    // lifetime (a removed key must stop working): the key
                    // server is unavailable, which a client may retry.
                    None => Err(ApiError::ServiceUnavailable(format!(
                        "JWKS fetch failed: {error}"
                    ))),
                }
            }
        }
    }

    fn fresh(&self) -> Option<Arc<KeySet>> {
        let state = self.state();
        match (&state.keys, state.expires_at) {
            (Some(keys), Some(at)) if self.clock.now() < at => Some(Arc::clone(keys)),
            _ => None,
        }
    }

    /// Refetches after a token named a kid that `seen` lacks, at most once per
    /// [`UNKNOWN_KID_REFRESH_INTERVAL`]. Returns the newer set, if there is one.
    async fn refresh_for_unknown_kid(&self, seen: &Arc<KeySet>) -> Option<Arc<KeySet>> {
        let _one_fetch = self.fetching.lock().await;
        let now = self.clock.now();
        {
            let mut state = self.state();
            // Someone else refetched while we waited: use that.
            if let Some(current) = &state.keys
                && !Arc::ptr_eq(current, seen)
            {
                return Some(Arc::clone(current));
            }
            if state
                .last_unknown_kid_refresh
                .is_some_and(|at| now - at < chrono_span(UNKNOWN_KID_REFRESH_INTERVAL))
            {
                return None;
            }
            state.last_unknown_kid_refresh = Some(now);
        }
        match self.fetch().await {
            Ok(set) => Some(set),
            Err(error) => {
                tracing::warn!(url = %self.url, %error, "JWKS refresh for an unknown kid failed");
                None
            }
        }
    }

    /// One GET of the JWKS; on success the cache is replaced, on failure the
    /// back-off starts. Callers hold `fetching`.
    async fn fetch(&self) -> Result<Arc<KeySet>, String> {
        let result = self.download().await;
        let now = self.clock.now();
        let mut state = self.state();
        match result {
            Ok((set, max_age)) => {
                let set = Arc::new(set);
                tracing::info!(url = %self.url, keys = set.len(), max_age_s = max_age.as_secs(), "JWKS fetched");
                state.keys = Some(Arc::clone(&set));
                state.expires_at = Some(now + chrono_span(max_age));
                state.retry_at = None;
                Ok(set)
            }
            Err(error) => {
                state.retry_at = Some(now + chrono_span(FAILED_FETCH_BACKOFF));
                Err(error)
            }
        }
    }

    async fn download(&self) -> Result<(KeySet, Duration), String> {
        use http_body_util::BodyExt;
        let client = self.client.as_ref().map_err(Clone::clone)?;
        let request = hyper::Request::get(&self.url)
            .header(hyper::header::ACCEPT, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("proxy-metrics/", env!("CARGO_PKG_VERSION")),
            )
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .map_err(|e| format!("GET {}: {e}", self.url))?;
        // Redirects are not followed (hyper never does): a key server that
        // moves must be reconfigured, not trusted blindly.
        let fetch = async {
            let response = client
                .request(request)
                .await
                .map_err(|e| format!("GET {}: {e}", self.url))?;
            if !response.status().is_success() {
                return Err(format!("GET {}: HTTP {}", self.url, response.status()));
            }
            let max_age = cache_max_age(response.headers().get(hyper::header::CACHE_CONTROL));
            let mut body = response.into_body();
            let mut bytes = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| format!("reading {}: {e}", self.url))?;
                if let Some(chunk) = frame.data_ref() {
                    if bytes.len() + chunk.len() > MAX_JWKS_BYTES {
                        return Err(format!(
                            "{} is larger than {MAX_JWKS_BYTES} bytes",
                            self.url
                        ));
                    }
                    bytes.extend_from_slice(chunk);
                }
            }
            Ok((bytes, max_age))
        };
        let (body, max_age) = tokio::time::timeout(JWKS_TOTAL_TIMEOUT, fetch)
            .await
            .map_err(|_| format!("GET {}: no answer within {JWKS_TOTAL_TIMEOUT:?}", self.url))??;
        let (set, skipped) = KeySet::from_jwks_json(&body)
            .map_err(|e| format!("{} is not a usable JWKS: {e}", self.url))?;
        for reason in skipped {
            tracing::warn!(url = %self.url, %reason, "JWKS key skipped");
        }
        Ok((set, max_age))
    }
}

/// The HTTP client of a JWKS URL: hyper with rustls (aws-lc-rs, the provider
/// the AWS SDK links anyway) and the system's root certificates — a JWKS
/// server can be anyone's, unlike DynamoDB's.
type JwksClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Empty<hyper::body::Bytes>,
>;

fn jwks_client() -> Result<JwksClient, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_connect_timeout(Some(JWKS_CONNECT_TIMEOUT));
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider)
        .map_err(|e| format!("building the JWKS HTTP client: {e}"))?
        // http:// only reaches loopback (checked at start-up, config.rs)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https),
    )
}

/// How long a fetched JWKS is cached: its `Cache-Control: max-age`, within
/// bounds, or [`DEFAULT_JWKS_MAX_AGE`].
fn cache_max_age(header: Option<&hyper::header::HeaderValue>) -> Duration {
    let Some(value) = header.and_then(|h| h.to_str().ok()) else {
        return DEFAULT_JWKS_MAX_AGE;
    };
    let mut max_age = None;
    for directive in value.split(',').map(|d| d.trim().to_ascii_lowercase()) {
        if directive == "no-cache" || directive == "no-store" {
            return MIN_JWKS_MAX_AGE;
        }
        if let Some(seconds) = directive.strip_prefix("max-age=") {
            max_age = seconds
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    max_age
        .map(|age| age.clamp(MIN_JWKS_MAX_AGE, MAX_JWKS_MAX_AGE))
        .unwrap_or(DEFAULT_JWKS_MAX_AGE)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::{Value, json};

    use super::*;
    use crate::config::Config;

    const SECRET: &str = "unit-test-secret-0123456789";
    const RSA_1: &str = include_str!("../../tests/fixtures/rsa-1.pem");
    const RSA_2: &str = include_str!("../../tests/fixtures/rsa-2.pem");
    const EC_1: &str = include_str!("../../tests/fixtures/ec-1.pem");

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
        let unnamed =
            authenticator(&[("JWT_JWKS", &jwks(vec![jwk(None, Algorithm::RS256, RSA_1)]))]);
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
        let mut off_curve =
            serde_json::to_value(jwk(Some("bad-ec"), Algorithm::ES256, EC_1)).unwrap();
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
}
