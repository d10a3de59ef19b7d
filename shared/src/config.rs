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
    /// What Lambda puts in every function's environment: the region and the
    /// execution role's credentials (checked when the client is built).
    pub aws: AwsEnvironment,
}

/// `AWS_REGION` and the execution role's credentials, as Lambda sets them.
#[derive(Clone, Default)]
pub struct AwsEnvironment {
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AwsEnvironment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsEnvironment")
            .field("region", &self.region)
            .field(
                "access_key_id",
                &self.access_key_id.as_ref().map(|_| "<set>"),
            )
            .finish_non_exhaustive()
    }
}

/// The roots of Amazon Trust Services, which sign every AWS endpoint's
/// certificate: the only ones the DynamoDB client trusts. Compiled in, so a
/// cold start reads and parses 5 certificates instead of the system's ~140
/// (the largest share of init time; see BENCHMARKS.md, "Cold start").
const AMAZON_ROOTS: &str = include_str!("../certs/amazon-trust-services.pem");

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
            aws: AwsEnvironment {
                region: get("AWS_REGION").or_else(|| get("AWS_DEFAULT_REGION")),
                access_key_id: get("AWS_ACCESS_KEY_ID"),
                secret_access_key: get("AWS_SECRET_ACCESS_KEY"),
                session_token: get("AWS_SESSION_TOKEN"),
            },
            dynamodb_endpoint: get("DYNAMODB_ENDPOINT"),
            auth: AuthConfig {
                keys,
                issuer: get("JWT_ISSUER"),
                audience: get("JWT_AUDIENCE"),
            },
        })
    }

    /// The DynamoDB client every function builds once, at start-up: the
    /// region and credentials Lambda provides in the environment (no
    /// provider chain, no profile files), and an HTTPS client trusting only
    /// Amazon's roots.
    pub fn dynamodb_client(&self) -> Result<aws_sdk_dynamodb::Client, ConfigError> {
        use aws_sdk_dynamodb::config::{Credentials, Region};
        use aws_smithy_http_client::tls::{
            self, TlsContext, TrustStore, rustls_provider::CryptoMode,
        };
        let need = |value: &Option<String>, name: &str| {
            value
                .clone()
                .ok_or_else(|| ConfigError(format!("{name} must be set (Lambda sets it)")))
        };
        let region = need(&self.aws.region, "AWS_REGION")?;
        let credentials = Credentials::new(
            need(&self.aws.access_key_id, "AWS_ACCESS_KEY_ID")?,
            need(&self.aws.secret_access_key, "AWS_SECRET_ACCESS_KEY")?,
            self.aws.session_token.clone(),
            None,
            "lambda-environment",
        );
        let trust = TrustStore::empty().with_pem_certificate(AMAZON_ROOTS.as_bytes());
        let tls = TlsContext::builder()
            .with_trust_store(trust)
            .build()
            .map_err(|e| ConfigError(format!("TLS set-up: {e}")))?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(tls)
            .build_https();
        let mut conf = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(Region::new(region))
            .credentials_provider(credentials)
            .http_client(http)
            // Our own retry loop (storage::retry) decides how long to keep
            // trying, so the SDK's standard retries are kept short.
            .retry_config(
                aws_sdk_dynamodb::config::retry::RetryConfig::standard().with_max_attempts(2),
            );
        if let Some(endpoint) = &self.dynamodb_endpoint {
            conf = conf.endpoint_url(endpoint);
        }
        Ok(aws_sdk_dynamodb::Client::from_conf(conf.build()))
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
