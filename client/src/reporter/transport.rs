//! How one attempt of a batch goes out: HTTP, stdout (dry run), or a
//! script in tests.

use std::sync::{Arc, PoisonError, RwLock};

use tracing::warn;

use super::config::MAX_RESPONSE_BYTES;
#[cfg(test)]
use super::script;
use crate::Error;
use crate::batch::Batch;
use crate::retry::{Reply, parse_retry_after};

pub(super) fn check_token(token: &str) -> Result<(), Error> {
    if token.is_empty() {
        return Err(Error::Config("token is empty".into()));
    }
    reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
        .map(|_| ())
        .map_err(|_| Error::Config("token holds characters a header cannot carry".into()))
}

/// How a batch attempt goes out.
pub(super) enum Transport {
    Http {
        client: reqwest::Client,
        endpoint: String,
        token: Arc<RwLock<String>>,
    },
    DryRun,
    #[cfg(test)]
    Scripted(Arc<script::Script>),
}

impl Transport {
    pub(super) async fn send(&self, batch: &Batch) -> Reply {
        match self {
            Transport::Http {
                client,
                endpoint,
                token,
            } => {
                let token = token.read().unwrap_or_else(PoisonError::into_inner).clone();
                let sent = client
                    .post(endpoint)
                    .bearer_auth(token)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header("Producer-Id", &batch.producer_id)
                    .header("Producer-Sequence", batch.sequence.to_string())
                    .body(batch.body.clone())
                    .send()
                    .await;
                match sent {
                    Err(e) => Reply::Network(error_chain(&e)),
                    Ok(mut response) => {
                        let status = response.status().as_u16();
                        let retry_after = response
                            .headers()
                            .get(reqwest::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(parse_retry_after);
                        let mut body = Vec::new();
                        // A body cut short still leaves the status, which
                        // is what decides; so read errors end the read only.
                        while body.len() < MAX_RESPONSE_BYTES {
                            match response.chunk().await {
                                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                                Ok(None) | Err(_) => break,
                            }
                        }
                        body.truncate(MAX_RESPONSE_BYTES);
                        Reply::Http {
                            status,
                            retry_after,
                            body,
                        }
                    }
                }
            }
            Transport::DryRun => {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                let written = out
                    .write_all(&batch.body)
                    .and_then(|()| out.write_all(b"\n"))
                    .and_then(|()| out.flush());
                if let Err(e) = written {
                    warn!(error = %e, "dry run: could not write the batch to stdout");
                }
                Reply::Http {
                    status: 201,
                    retry_after: None,
                    body: Vec::new(),
                }
            }
            #[cfg(test)]
            Transport::Scripted(script) => script.answer(batch),
        }
    }
}

/// An error with its causes ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
