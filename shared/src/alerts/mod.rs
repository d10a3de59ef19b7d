//! Alerts at run time: sealing webhook secrets ([`secret`]) and, with the
//! `alerts` feature, the scheduled evaluation and delivery ([`run`], [`send`]).

pub mod secret;

#[cfg(feature = "alerts")]
pub mod run;
#[cfg(feature = "alerts")]
pub mod send;

use serde::Serialize;

use crate::config::{ConfigError, Vars};
use secret::{SECRET_KEY_VARIABLE, SecretKey};

/// The variable that lets webhooks use `http` to loopback (the local stack only).
pub const ALLOW_LOOPBACK_VARIABLE: &str = "ALLOW_LOOPBACK_WEBHOOKS";

/// What alerts need from the deployment.
#[derive(Debug, Clone)]
pub struct AlertsConfig {
    pub key: SecretKey,
    pub allow_loopback: bool,
}

impl AlertsConfig {
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let key = vars
            .get(SECRET_KEY_VARIABLE)
            .ok_or_else(|| ConfigError(format!("{SECRET_KEY_VARIABLE} is required")))?;
        Ok(Self {
            key: SecretKey::from_base64(&key).map_err(ConfigError)?,
            allow_loopback: allow_loopback(vars),
        })
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&Vars::from_env())
    }
}

pub fn allow_loopback(vars: &Vars) -> bool {
    vars.get(ALLOW_LOOPBACK_VARIABLE).as_deref() == Some("1")
}

/// What `evaluate-alerts` returns.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub rules_evaluated: u64,
    pub state_changes: u64,
    pub deliveries_attempted: u64,
    pub deliveries_succeeded: u64,
    pub duration_ms: u64,
}
