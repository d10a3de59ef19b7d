//! The agent's start-up check of its URL and token: one `GET` of the
//! proxy's summary, which changes nothing. (A `POST` of an empty batch would
//! not do: the API checks the body before the token.) A proxy token has no
//! read scope, so 403 is the answer expected for a good one; 401 says the
//! token itself is bad (expired, wrong signature or issuer).
//!
//! A refused token (401) or an endpoint that does not exist (404, a URL
//! that is not the API's base) ends the start with a clear message: a
//! supervisor shows it at once, instead of an agent that runs and delivers
//! nothing. No answer at all only warns: at boot the network or the API may
//! come up after the agent, and delivery retries anyway.

use std::time::Duration;

use tracing::{info, warn};

/// `Err` holds the message to exit with.
pub async fn check_api(url: &str, token: &str, proxy_id: &str) -> Result<(), String> {
    let endpoint = format!(
        "{}/proxy/metrics/{proxy_id}/summary",
        url.trim_end_matches('/')
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("could not build the HTTP client: {e}"))?;
    let sent = client.get(&endpoint).bearer_auth(token).send().await;
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            warn!(%endpoint, error = %e, "start-up check: no answer from the API yet; starting anyway (delivery retries)");
            return Ok(());
        }
    };
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    let message: String = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect();
    match status {
        401 => Err(format!(
            "start-up check: the API refused the token (HTTP 401: {message}); \
             is it expired, or signed for another issuer?"
        )),
        404 | 405 => Err(format!(
            "start-up check: {endpoint} answered HTTP {status}: is --url the API's base URL, and is proxy {proxy_id:?} registered?"
        )),
        300..=399 => Err(format!(
            "start-up check: {endpoint} redirects (HTTP {status}); give --url the API's own address"
        )),
        _ => {
            info!(status, "start-up check: URL and token accepted");
            Ok(())
        }
    }
}
