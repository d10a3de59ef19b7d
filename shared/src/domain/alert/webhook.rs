//! Standard Webhooks (<https://www.standardwebhooks.com>): the signature,
//! the secret, the ids and the retry schedule.

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::Duration;

use super::ValidationError;

pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes of a new secret (the standard allows 24 to 64).
pub const SECRET_BYTES: usize = 32;

/// A secret as shown to the user: `whsec_` and the key's base64.
pub fn format_secret(key: &[u8]) -> String {
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// The HMAC key of a `whsec_` secret: the base64-decoded bytes after the prefix.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, ValidationError> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    STANDARD
        .decode(encoded)
        .map_err(|_| ValidationError::invalid("The webhook secret is not valid base64."))
}

/// `webhook-signature`: `v1,` and the base64 HMAC-SHA256 of `id.timestamp.body`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut context = hmac::Context::with_key(&key);
    context.update(id.as_bytes());
    context.update(b".");
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    format!("v1,{}", STANDARD.encode(context.sign().as_ref()))
}

/// Whether one of the space-separated signatures of a `webhook-signature`
/// header is valid for this message (constant-time comparison).
pub fn verify(key: &[u8], id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let hkey = hmac::Key::new(hmac::HMAC_SHA256, key);
    let message = format!("{id}.{timestamp}.");
    let mut signed = message.into_bytes();
    signed.extend_from_slice(body);
    header.split(' ').any(|sig| {
        sig.strip_prefix("v1,")
            .and_then(|b64| STANDARD.decode(b64).ok())
            .is_some_and(|tag| hmac::verify(&hkey, &signed, &tag).is_ok())
    })
}

/// The `webhook-id` of a rule's state change: the same for every attempt,
/// every run and every instance that could send it.
pub fn change_id(alert_id: &str, sequence: u64) -> String {
    format!("msg_{alert_id}_{sequence}")
}

/// Delays before the 2nd, 3rd, … 10th attempt; after the 10th, give up.
pub const RETRY_DELAYS_SECONDS: [i64; 9] = [
    5,
    5 * 60,
    30 * 60,
    2 * 3600,
    5 * 3600,
    10 * 3600,
    14 * 3600,
    20 * 3600,
    24 * 3600,
];

/// After failed attempt `attempt` (1-based), how long to wait before the
/// next one, `None` when there is none. `jitter` in [-1, 1] scales ±10 %.
pub fn retry_delay(attempt: u32, jitter: f64) -> Option<Duration> {
    let base = *RETRY_DELAYS_SECONDS.get(usize::try_from(attempt).ok()?.checked_sub(1)?)?;
    let factor = 1.0 + 0.1 * jitter.clamp(-1.0, 1.0);
    Some(Duration::milliseconds(
        (base as f64 * 1000.0 * factor).round() as i64,
    ))
}
