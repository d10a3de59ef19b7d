//! A JWKS fetched from `JWT_JWKS_URL`, cached per warm container, refreshed
//! for a new `kid` (rate-limited), kept for a bounded time while its server
//! fails.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::keys::KeySet;
use crate::clock::Clock;
use crate::error::ApiError;

/// A fetched JWKS is cached this long when its response sets no `max-age`.
pub const DEFAULT_JWKS_MAX_AGE: Duration = Duration::from_secs(600);
/// Bounds on an honoured `Cache-Control: max-age`; `no-cache` and `no-store`
/// get the lower bound.
pub const MIN_JWKS_MAX_AGE: Duration = Duration::from_secs(60);
pub const MAX_JWKS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// A token naming an unknown `kid` triggers a refetch at most this often.
pub const UNKNOWN_KID_REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// After a failed fetch, no new attempt is made for this long (stale keys, if
/// any, keep being used meanwhile).
pub const FAILED_FETCH_BACKOFF: Duration = Duration::from_secs(10);
/// How long cached keys stay in use past their lifetime while the key server
/// cannot be reached; after that requests get 503, so that a key removed from
/// the JWKS stops working even if its server is down.
pub const STALE_JWKS_GRACE: Duration = Duration::from_secs(24 * 3600);
/// Largest JWKS document accepted from `JWT_JWKS_URL`.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Timeouts of the JWKS fetch (a Lambda's budget is seconds, not minutes).
const JWKS_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const JWKS_TOTAL_TIMEOUT: Duration = Duration::from_secs(5);

/// A JWKS fetched from a URL, cached per warm container.
pub(super) struct RemoteJwks {
    url: String,
    /// Built at start-up (only when a JWKS URL is configured: HS256 and
    /// inline-JWKS deployments never load the system's roots); an error (no
    /// usable root certificates) is reported on first use.
    client: Result<JwksClient, String>,
    state: Mutex<RemoteState>,
    /// One fetch at a time; others wait for its result instead of fetching too.
    fetching: tokio::sync::Mutex<()>,
    /// Lifetimes and back-offs are read against the service's clock.
    clock: Clock,
}

fn chrono_span(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[derive(Default)]
struct RemoteState {
    keys: Option<Arc<KeySet>>,
    /// When the cached set should be fetched again.
    expires_at: Option<DateTime<Utc>>,
    /// After a failure: no new attempt before this.
    retry_at: Option<DateTime<Utc>>,
    /// The last refetch caused by an unknown kid (rate-limited).
    last_unknown_kid_refresh: Option<DateTime<Utc>>,
}

impl RemoteState {
    /// Cached keys past their lifetime, while still within
    /// [`STALE_JWKS_GRACE`] of it (refetches failing meanwhile).
    fn stale(&self, now: DateTime<Utc>) -> Option<Arc<KeySet>> {
        match (&self.keys, self.expires_at) {
            (Some(keys), Some(at)) if now < at + chrono_span(STALE_JWKS_GRACE) => {
                Some(Arc::clone(keys))
            }
            _ => None,
        }
    }
}

impl RemoteJwks {
    pub(super) fn new(url: &str, clock: Clock) -> Self {
        let client = jwks_client();
        if let Err(e) = &client {
            tracing::error!(error = %e, "JWKS client unavailable");
        }
        Self {
            url: url.to_string(),
            client,
            state: Mutex::new(RemoteState::default()),
            fetching: tokio::sync::Mutex::new(()),
            clock,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, RemoteState> {
        // The state is a few plain fields, valid after any panic: ignore poisoning.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Cached keys while fresh; otherwise one fetch (others wait for it).
    /// A failed refetch keeps the stale keys in use.
    pub(super) async fn current(&self) -> Result<Arc<KeySet>, ApiError> {
        if let Some(fresh) = self.fresh() {
            return Ok(fresh);
        }
        let _one_fetch = self.fetching.lock().await;
        if let Some(fresh) = self.fresh() {
            return Ok(fresh);
        }
        let now = self.clock.now();
        {
            let state = self.state();
            if state.retry_at.is_some_and(|at| now < at) {
                return state.stale(now).ok_or_else(|| {
                    ApiError::ServiceUnavailable(
                        "the JWKS could not be fetched recently; backing off".into(),
                    )
                });
            }
        }
        match self.fetch().await {
            Ok(set) => Ok(set),
            Err(error) => {
                let stale = self.state().stale(self.clock.now());
                match stale {
                    Some(keys) => {
                        tracing::warn!(url = %self.url, %error, "JWKS refresh failed; using the cached keys");
                        Ok(keys)
                    }
                    // No keys at a cold start, or keys too long past their
                    // lifetime (a removed key must stop working): the key
                    // server is unavailable, which a client may retry.
                    None => Err(ApiError::ServiceUnavailable(format!(
                        "JWKS fetch failed: {error}"
                    ))),
                }
            }
        }
    }

    fn fresh(&self) -> Option<Arc<KeySet>> {
        let state = self.state();
        match (&state.keys, state.expires_at) {
            (Some(keys), Some(at)) if self.clock.now() < at => Some(Arc::clone(keys)),
            _ => None,
        }
    }

    /// Refetches after a token named a kid that `seen` lacks, at most once per
    /// [`UNKNOWN_KID_REFRESH_INTERVAL`]. Returns the newer set, if there is one.
    pub(super) async fn refresh_for_unknown_kid(&self, seen: &Arc<KeySet>) -> Option<Arc<KeySet>> {
        let _one_fetch = self.fetching.lock().await;
        let now = self.clock.now();
        {
            let mut state = self.state();
            // Someone else refetched while we waited: use that.
            if let Some(current) = &state.keys
                && !Arc::ptr_eq(current, seen)
            {
                return Some(Arc::clone(current));
            }
            if state
                .last_unknown_kid_refresh
                .is_some_and(|at| now - at < chrono_span(UNKNOWN_KID_REFRESH_INTERVAL))
            {
                return None;
            }
            state.last_unknown_kid_refresh = Some(now);
        }
        match self.fetch().await {
            Ok(set) => Some(set),
            Err(error) => {
                tracing::warn!(url = %self.url, %error, "JWKS refresh for an unknown kid failed");
                None
            }
        }
    }

    /// One GET of the JWKS; on success the cache is replaced, on failure the
    /// back-off starts. Callers hold `fetching`.
    async fn fetch(&self) -> Result<Arc<KeySet>, String> {
        let result = self.download().await;
        let now = self.clock.now();
        let mut state = self.state();
        match result {
            Ok((set, max_age)) => {
                let set = Arc::new(set);
                tracing::info!(url = %self.url, keys = set.len(), max_age_s = max_age.as_secs(), "JWKS fetched");
                state.keys = Some(Arc::clone(&set));
                state.expires_at = Some(now + chrono_span(max_age));
                state.retry_at = None;
                Ok(set)
            }
            Err(error) => {
                state.retry_at = Some(now + chrono_span(FAILED_FETCH_BACKOFF));
                Err(error)
            }
        }
    }

    async fn download(&self) -> Result<(KeySet, Duration), String> {
        use http_body_util::BodyExt;
        let client = self.client.as_ref().map_err(Clone::clone)?;
        let request = hyper::Request::get(&self.url)
            .header(hyper::header::ACCEPT, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("proxy-metrics/", env!("CARGO_PKG_VERSION")),
            )
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .map_err(|e| format!("GET {}: {e}", self.url))?;
        // Redirects are not followed (hyper never does): a key server that
        // moves must be reconfigured, not trusted blindly.
        let fetch = async {
            let response = client
                .request(request)
                .await
                .map_err(|e| format!("GET {}: {e}", self.url))?;
            if !response.status().is_success() {
                return Err(format!("GET {}: HTTP {}", self.url, response.status()));
            }
            let max_age = cache_max_age(response.headers().get(hyper::header::CACHE_CONTROL));
            let mut body = response.into_body();
            let mut bytes = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| format!("reading {}: {e}", self.url))?;
                if let Some(chunk) = frame.data_ref() {
                    if bytes.len() + chunk.len() > MAX_JWKS_BYTES {
                        return Err(format!(
                            "{} is larger than {MAX_JWKS_BYTES} bytes",
                            self.url
                        ));
                    }
                    bytes.extend_from_slice(chunk);
                }
            }
            Ok((bytes, max_age))
        };
        let (body, max_age) = tokio::time::timeout(JWKS_TOTAL_TIMEOUT, fetch)
            .await
            .map_err(|_| format!("GET {}: no answer within {JWKS_TOTAL_TIMEOUT:?}", self.url))??;
        let (set, skipped) = KeySet::from_jwks_json(&body)
            .map_err(|e| format!("{} is not a usable JWKS: {e}", self.url))?;
        for reason in skipped {
            tracing::warn!(url = %self.url, %reason, "JWKS key skipped");
        }
        Ok((set, max_age))
    }
}

/// The HTTP client of a JWKS URL: hyper with rustls (aws-lc-rs, the provider
/// the AWS SDK links anyway) and the system's root certificates — a JWKS
/// server can be anyone's, unlike DynamoDB's.
type JwksClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Empty<hyper::body::Bytes>,
>;

fn jwks_client() -> Result<JwksClient, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_connect_timeout(Some(JWKS_CONNECT_TIMEOUT));
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider)
        .map_err(|e| format!("building the JWKS HTTP client: {e}"))?
        // http:// only reaches loopback (checked at start-up, config.rs)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https),
    )
}

/// How long a fetched JWKS is cached: its `Cache-Control: max-age`, within
/// bounds, or [`DEFAULT_JWKS_MAX_AGE`].
pub(super) fn cache_max_age(header: Option<&hyper::header::HeaderValue>) -> Duration {
    let Some(value) = header.and_then(|h| h.to_str().ok()) else {
        return DEFAULT_JWKS_MAX_AGE;
    };
    let mut max_age = None;
    for directive in value.split(',').map(|d| d.trim().to_ascii_lowercase()) {
        if directive == "no-cache" || directive == "no-store" {
            return MIN_JWKS_MAX_AGE;
        }
        if let Some(seconds) = directive.strip_prefix("max-age=") {
            max_age = seconds
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    max_age
        .map(|age| age.clamp(MIN_JWKS_MAX_AGE, MAX_JWKS_MAX_AGE))
        .unwrap_or(DEFAULT_JWKS_MAX_AGE)
}
