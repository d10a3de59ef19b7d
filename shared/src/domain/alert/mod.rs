//! Alert rules (contract v3, "Alerts"): what a rule is and how its fields are
//! validated, with every default filled in. Pure: no storage, no HTTP.
//!
//! - [`eval`]: the state machine over closed windows (M of N, hysteresis, no data).
//! - [`webhook`]: Standard Webhooks signing, the retry schedule.
//! - [`target`]: webhook URL rules and the SSRF address classifier.

pub mod eval;
pub mod target;
pub mod webhook;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ValidationError;
use super::event::reject_unknown;
use super::tier::Tier;

/// The fields of a rule body.
pub const RULE_FIELDS: &[&str] = &[
    "name",
    "metric",
    "comparison",
    "threshold",
    "recoveryThreshold",
    "windowMinutes",
    "evaluations",
    "breaching",
    "noData",
    "webhookUrl",
];

pub const WINDOW_MINUTES: [u32; 5] = [5, 10, 15, 30, 60];
pub const MAX_EVALUATIONS: u32 = 10;
pub const MAX_NAME_CHARS: usize = 256;
pub const MAX_URL_CHARS: usize = 2048;

/// Rules per proxy, by the owner's tier.
pub fn rule_limit(tier: Tier) -> usize {
    match tier {
        Tier::Free => 10,
        Tier::Pro => 50,
        Tier::Enterprise => 200,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Metric {
    ErrorRate,
    P95LatencyMs,
    P99LatencyMs,
    AverageLatencyMs,
    RequestCount,
    UptimePercentage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Comparison {
    Above,
    Below,
}

/// What a window without events counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NoData {
    Ok,
    Breaching,
    NoData,
}

/// A validated rule, every default filled in (what is stored and shown).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleSpec {
    pub name: String,
    pub metric: Metric,
    pub comparison: Comparison,
    pub threshold: f64,
    pub recovery_threshold: f64,
    pub window_minutes: u32,
    pub evaluations: u32,
    pub breaching: u32,
    pub no_data: NoData,
    pub webhook_url: String,
}

fn enum_field<T: serde::de::DeserializeOwned>(
    body: &Map<String, Value>,
    field: &str,
    allowed: &str,
    default: Option<T>,
) -> Result<T, ValidationError> {
    match body.get(field) {
        None | Some(Value::Null) => default
            .ok_or_else(|| ValidationError::invalid(format!("'{field}' is required ({allowed})."))),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|_| ValidationError::invalid(format!("'{field}' must be one of {allowed}."))),
    }
}

fn number_field(body: &Map<String, Value>, field: &str) -> Result<Option<f64>, ValidationError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|v| v.is_finite())
            .map(Some)
            .ok_or_else(|| ValidationError::invalid(format!("'{field}' must be a finite number."))),
        Some(_) => Err(ValidationError::invalid(format!(
            "'{field}' must be a number."
        ))),
    }
}

fn count_field(
    body: &Map<String, Value>,
    field: &str,
    default: u32,
) -> Result<u32, ValidationError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| ValidationError::invalid(format!("'{field}' must be a whole number."))),
        Some(_) => Err(ValidationError::invalid(format!(
            "'{field}' must be a whole number."
        ))),
    }
}

fn string_field(
    body: &Map<String, Value>,
    field: &str,
    max: usize,
) -> Result<String, ValidationError> {
    match body.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= max => Ok(s.clone()),
        Some(Value::String(_)) => Err(ValidationError::invalid(format!(
            "'{field}' must be 1 to {max} characters."
        ))),
        None | Some(Value::Null) => {
            Err(ValidationError::invalid(format!("'{field}' is required.")))
        }
        Some(_) => Err(ValidationError::invalid(format!(
            "'{field}' must be a string."
        ))),
    }
}

impl RuleSpec {
    /// Validates a rule body (unknown fields refused) and fills in the
    /// contract's defaults. The webhook URL's syntax is checked here
    /// ([`target::parse`]); its resolved addresses by the caller.
    pub fn from_body(body: &Value, allow_loopback: bool) -> Result<Self, ValidationError> {
        let Value::Object(body) = body else {
            return Err(ValidationError::invalid("The body must be a JSON object."));
        };
        reject_unknown(body, RULE_FIELDS, "an alert rule")?;
        let name = string_field(body, "name", MAX_NAME_CHARS)?;
        let metric = enum_field(
            body,
            "metric",
            "errorRate, p95LatencyMs, p99LatencyMs, averageLatencyMs, requestCount, uptimePercentage",
            None,
        )?;
        let comparison = enum_field(body, "comparison", "above, below", None)?;
        let threshold = number_field(body, "threshold")?
            .ok_or_else(|| ValidationError::invalid("'threshold' is required."))?;
        let recovery_threshold = number_field(body, "recoveryThreshold")?.unwrap_or(threshold);
        match comparison {
            Comparison::Above if recovery_threshold > threshold => {
                return Err(ValidationError::invalid(
                    "'recoveryThreshold' must not be above 'threshold' for comparison 'above'.",
                ));
            }
            Comparison::Below if recovery_threshold < threshold => {
                return Err(ValidationError::invalid(
                    "'recoveryThreshold' must not be below 'threshold' for comparison 'below'.",
                ));
            }
            _ => {}
        }
        let window_minutes = count_field(body, "windowMinutes", 5)?;
        if !WINDOW_MINUTES.contains(&window_minutes) {
            return Err(ValidationError::invalid(
                "'windowMinutes' must be 5, 10, 15, 30 or 60.",
            ));
        }
        let evaluations = count_field(body, "evaluations", 1)?;
        let breaching = count_field(body, "breaching", 1)?;
        if !(1 <= breaching && breaching <= evaluations && evaluations <= MAX_EVALUATIONS) {
            return Err(ValidationError::invalid(format!(
                "'breaching' and 'evaluations' must satisfy 1 <= breaching <= evaluations <= {MAX_EVALUATIONS}."
            )));
        }
        let no_data = enum_field(
            body,
            "noData",
            "ok, breaching, noData",
            Some(NoData::NoData),
        )?;
        let webhook_url = string_field(body, "webhookUrl", MAX_URL_CHARS)?;
        target::parse(&webhook_url, allow_loopback)?;
        Ok(Self {
            name,
            metric,
            comparison,
            threshold,
            recovery_threshold,
            window_minutes,
            evaluations,
            breaching,
            no_data,
            webhook_url,
        })
    }
}

#[cfg(test)]
mod tests;
