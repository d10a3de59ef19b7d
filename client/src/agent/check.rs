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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server answering every request with `status` (a JSON message, and
    /// a `location` for the redirect).
    async fn answering(status: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let body = r#"{"message":"Invalid token"}"#;
                let answer = format!(
                    "HTTP/1.1 {status}\r\nlocation: http://elsewhere.example/\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        url
    }

    #[tokio::test]
    async fn a_refused_token_a_wrong_url_or_a_redirect_end_the_start_and_silence_does_not() {
        let e = check_api(&answering("401 Unauthorized").await, "t", "edge")
            .await
            .unwrap_err();
        assert!(
            e.contains("refused the token (HTTP 401: Invalid token)"),
            "{e}"
        );
        let e = check_api(&answering("404 Not Found").await, "t", "edge")
            .await
            .unwrap_err();
        assert!(
            e.contains("answered HTTP 404: is --url the API's base URL"),
            "{e}"
        );
        let e = check_api(&answering("302 Found").await, "t", "edge")
            .await
            .unwrap_err();
        assert!(e.contains("redirects (HTTP 302)"), "{e}");
        // a good proxy token has no read scope: 403 is what it gets
        assert_eq!(
            check_api(&answering("403 Forbidden").await, "t", "edge").await,
            Ok(())
        );
        // no answer at all (the API not up yet): start anyway
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        assert_eq!(check_api(&closed, "t", "edge").await, Ok(()));
    }
}
