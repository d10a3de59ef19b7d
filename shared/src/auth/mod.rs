//! Bearer-token verification and what a verified caller may do.
//!
//! Keys come from exactly one source (`keys.rs`): an HS256 shared secret, or
//! a JWKS (inline or by URL, `remote_jwks.rs`) holding RS256 and ES256 public
//! keys. The algorithm a token is checked with is the one its key is for: the
//! token's `alg` header must agree with it, and `none` never parses. A JWKS
//! fetched by URL is cached per warm container; after that, authenticating
//! makes no network call.

mod caller;
mod keys;
mod remote_jwks;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use jsonwebtoken::{Algorithm, Validation, decode};
use serde::Deserialize;

pub use caller::{Caller, Scope};
pub use keys::{KeySet, KeySource, MIN_SECRET_CHARS, VerifyingKey};
pub use remote_jwks::{
    DEFAULT_JWKS_MAX_AGE, FAILED_FETCH_BACKOFF, MAX_JWKS_BYTES, MAX_JWKS_MAX_AGE, MIN_JWKS_MAX_AGE,
    STALE_JWKS_GRACE, UNKNOWN_KID_REFRESH_INTERVAL,
};

use crate::clock::Clock;
use crate::config::{ConfigError, Vars};
pub use crate::domain::tier::Tier;
use crate::error::ApiError;
use keys::JWKS_ALGORITHMS;
use remote_jwks::RemoteJwks;

/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY_SECONDS: u64 = 60;

/// Where tokens are checked against: the key source, and the issuer and
/// audience a token must name when set (`JWT_*` variables).
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub keys: KeySource,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl AuthConfig {
    /// From the `JWT_*` variables.
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        Ok(Self {
            keys: keys::key_source(vars)?,
            issuer: vars.get("JWT_ISSUER"),
            audience: vars.get("JWT_AUDIENCE"),
        })
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
