//! Alerts at run time: sealing webhook secrets ([`secret`]) and, with the
//! `alerts` feature, the scheduled evaluation and delivery ([`run`], [`send`]).

pub mod secret;

#[cfg(feature = "alerts")]
pub mod run;
#[cfg(feature = "alerts")]
pub mod send;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::json;

use crate::domain::alert::eval::State;
use crate::storage::alerts::AlertRule;

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

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn instant(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::UNIX_EPOCH)
}

/// The webhook body of a change (or a test) of `rule`.
pub fn run_payload(
    rule: &AlertRule,
    event_type: &str,
    state: State,
    previous: State,
    value: Option<f64>,
    window: (i64, i64),
    now: DateTime<Utc>,
) -> String {
    json!({
        "type": event_type,
        "timestamp": rfc3339(now),
        "data": {
            "alertId": rule.alert_id,
            "proxyId": rule.proxy_id,
            "name": rule.spec.name,
            "metric": rule.spec.metric,
            "comparison": rule.spec.comparison,
            "threshold": rule.spec.threshold,
            "value": value,
            "state": state.as_str(),
            "previousState": previous.as_str(),
            "windowStart": rfc3339(instant(window.0)),
            "windowEnd": rfc3339(instant(window.1)),
        }
    })
    .to_string()
}
