//! Start-up wiring: what each function builds once, before its first request.
//!
//! The API functions build an [`App`] (store, token checks, clock, the
//! per-proxy and per-caller limits); the scheduled aggregation builds a store only
//! (`Store::from_env`): no token checks, no JWT configuration.

use std::collections::HashMap;

use crate::auth::{AuthConfig, Authenticator};
use crate::clock::Clock;
use crate::config::{ConfigError, StoreConfig, Vars};
use crate::ratelimit::{
    DEFAULT_CALLER_BURST, DEFAULT_CALLER_RATE, DEFAULT_RECORD_BURST, DEFAULT_RECORD_RATE,
    RateLimit, RateLimiter,
};
use crate::storage::Store;

/// The whole configuration of an API function.
#[derive(Debug, Clone)]
pub struct Config {
    pub store: StoreConfig,
    pub auth: AuthConfig,
    /// Per proxy, per container: `RECORD_RATE_PER_PROXY` requests a second,
    /// `RECORD_BURST_PER_PROXY` at once (see `ratelimit.rs`).
    pub record_limit: RateLimit,
    /// Per caller (token `sub`), per container: `REQUEST_RATE_PER_CALLER`
    /// requests a second, `REQUEST_BURST_PER_CALLER` at once, on every
    /// request that reads storage for the caller (see `ratelimit.rs`).
    pub caller_limit: RateLimit,
    /// `ALERTS_SECRET_KEY`: seals webhook secrets (alert functions only).
    pub alerts_key: Option<crate::alerts::secret::SecretKey>,
    /// `ALLOW_LOOPBACK_WEBHOOKS=1`: the local stack's `http` to loopback.
    pub allow_loopback_webhooks: bool,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&Vars::from_env())
    }

    /// Builds the configuration from a map of variables (tests use this).
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::from_vars(&Vars::from_map(vars))
    }

    fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let positive = |name: &str, default: f64| -> Result<f64, ConfigError> {
            match vars.get(name) {
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
        Ok(Self {
            store: StoreConfig::from_vars(vars)?,
            auth: AuthConfig::from_vars(vars)?,
            record_limit: RateLimit {
                rate: positive("RECORD_RATE_PER_PROXY", DEFAULT_RECORD_RATE)?,
                burst: positive("RECORD_BURST_PER_PROXY", DEFAULT_RECORD_BURST)?.max(1.0),
            },
            caller_limit: RateLimit {
                rate: positive("REQUEST_RATE_PER_CALLER", DEFAULT_CALLER_RATE)?,
                burst: positive("REQUEST_BURST_PER_CALLER", DEFAULT_CALLER_BURST)?.max(1.0),
            },
            alerts_key: vars
                .get(crate::alerts::secret::SECRET_KEY_VARIABLE)
                .map(|v| crate::alerts::secret::SecretKey::from_base64(&v))
                .transpose()
                .map_err(ConfigError)?,
            allow_loopback_webhooks: crate::alerts::allow_loopback(vars),
        })
    }
}

/// Everything a handler needs, built once per container.
pub struct App {
    pub store: Store,
    pub auth: Authenticator,
    /// The one source of "now" (pinned in tests).
    pub clock: Clock,
    /// Per-proxy recording limit of this container (after ownership).
    pub record_limiter: RateLimiter,
    /// Per-caller limit of this container (before the ownership read).
    pub caller_limiter: RateLimiter,
    pub alerts_key: Option<crate::alerts::secret::SecretKey>,
    pub allow_loopback_webhooks: bool,
}

impl App {
    /// The app on the system clock.
    pub fn new(config: &Config, client: aws_sdk_dynamodb::Client) -> Self {
        Self::with_clock(config, client, Clock::system())
    }

    /// The app reading the time from `clock` (tests pin it).
    pub fn with_clock(config: &Config, client: aws_sdk_dynamodb::Client, clock: Clock) -> Self {
        Self {
            store: Store::new(client, &config.store.table_name, clock.clone()),
            auth: Authenticator::new(&config.auth, clock.clone()),
            clock,
            record_limiter: RateLimiter::new(config.record_limit),
            caller_limiter: RateLimiter::new(config.caller_limit),
            alerts_key: config.alerts_key.clone(),
            allow_loopback_webhooks: config.allow_loopback_webhooks,
        }
    }

    /// Reads and validates the environment, builds the SDK client.
    pub fn from_env() -> Result<Self, ConfigError> {
        let config = Config::from_env()?;
        let client = config.store.dynamodb_client()?;
        Ok(Self::new(&config, client))
    }
}
