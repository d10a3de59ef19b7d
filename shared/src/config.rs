//! Configuration from environment variables, validated once at start-up.
//!
//! Every variable the functions read is named here; nothing else in the crate
//! touches the environment.

use std::collections::HashMap;
use std::sync::Arc;

use crate::auth::KeySet;
use crate::ratelimit::RateLimit;

#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

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
    /// then cached; see `auth.rs`).
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

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub keys: KeySource,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub table_name: String,
    /// Only set locally and in tests: where the DynamoDB API is served.
    pub dynamodb_endpoint: Option<String>,
    pub auth: AuthConfig,
    /// Per proxy, per container: `RECORD_RATE_PER_PROXY` requests a second,
    /// `RECORD_BURST_PER_PROXY` at once (see `ratelimit.rs`).
    pub record_limit: RateLimit,
}

/// Defaults of the per-proxy recording limit: a proxy batching every few
/// seconds is far below them; a runaway loop is not.
pub const DEFAULT_RECORD_RATE: f64 = 10.0;
pub const DEFAULT_RECORD_BURST: f64 = 50.0;

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_map(&std::env::vars().collect())
    }

    /// Builds the configuration from a map of variables (tests use this).
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            vars.get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let table_name = get("TABLE_NAME")
            .ok_or_else(|| ConfigError("TABLE_NAME must name the DynamoDB table".into()))?;
        let keys = key_source(&get)?;
        let positive = |name: &str, default: f64| -> Result<f64, ConfigError> {
            match get(name) {
                None => Ok(default),
                Some(v) => v
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite() && *n > 0.0)
                    .ok_or_else(|| {
                        ConfigError(format!("{name} must be a number above 0, not {v:?}"))
                    }),
            }
        };
        let record_limit = RateLimit {
            rate: positive("RECORD_RATE_PER_PROXY", DEFAULT_RECORD_RATE)?,
            burst: positive("RECORD_BURST_PER_PROXY", DEFAULT_RECORD_BURST)?.max(1.0),
        };
        Ok(Self {
            table_name,
            record_limit,
            dynamodb_endpoint: get("DYNAMODB_ENDPOINT"),
            auth: AuthConfig {
                keys,
                issuer: get("JWT_ISSUER"),
                audience: get("JWT_AUDIENCE"),
            },
        })
    }

    /// The DynamoDB client every function builds once, at start-up.
    pub async fn dynamodb_client(&self) -> aws_sdk_dynamodb::Client {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(endpoint) = &self.dynamodb_endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let shared = loader.load().await;
        // Our own retry loop (storage::retry) decides how long to keep trying,
        // so the SDK's standard retries are kept short.
        let conf = aws_sdk_dynamodb::config::Builder::from(&shared)
            .retry_config(
                aws_sdk_dynamodb::config::retry::RetryConfig::standard().with_max_attempts(2),
            )
            .build();
        aws_sdk_dynamodb::Client::from_conf(conf)
    }
}

/// Chooses and checks the one key source (see [`KeySource`]).
fn key_source(get: &dyn Fn(&str) -> Option<String>) -> Result<KeySource, ConfigError> {
    let secret = get("JWT_SECRET");
    let source = match (get("JWT_JWKS"), get("JWT_JWKS_URL")) {
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
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    let host = parsed.host_str().ok_or_else(|| bad("it names no host"))?;
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(url.to_string()),
        "http" if loopback => Ok(url.to_string()),
        "http" => Err(bad(
            "it must use https:// (http:// is allowed for localhost only)",
        )),
        other => Err(bad(&format!("the scheme '{other}' is not http(s)"))),
    }
}
