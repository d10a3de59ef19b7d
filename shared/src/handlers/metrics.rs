//! `GET /metrics`: the caller's proxies for a Prometheus scraper.

use chrono::DateTime;
use futures::{StreamExt, TryStreamExt, stream};
use lambda_http::{Body, Request, Response, http::StatusCode};

use super::read::LATEST_LOOKBACK_DAYS;
use crate::auth::Scope;
use crate::domain::rollup::SummaryWindows;
use crate::domain::validate_proxy_id;
use crate::error::ApiError;
use crate::export::prometheus::{PROMETHEUS_CONTENT_TYPE, ProxyFigures, encode};
use crate::http::{App, authenticate, respond, take_caller_limit};
use crate::storage::Proxy;

/// Proxies read at once during a scrape (each read is five or six calls).
const SCRAPE_CONCURRENCY: usize = 8;

/// `GET /metrics` — needs `metrics:read`; a proxy-scoped token sees its own
/// proxy only. Per proxy: pending chunks, today's day and the last 24 hours
/// of five-minute buckets (plus the 6 days before today when neither holds
/// an event), and its counts since registration (the totals item and the
/// pending chunks it does not hold): at most 6 queries and 4 item reads,
/// whatever the proxy recorded.
pub async fn get_prometheus_metrics(app: &App, request: Request) -> Response<Body> {
    respond(&request, async {
        let caller = authenticate(app, &request).await?;
        caller.require_scope(Scope::MetricsRead)?;
        take_caller_limit(app, &caller)?;
        let proxies: Vec<Proxy> = match &caller.proxy_id {
            // One read for a proxy's own token; an id that is not a valid
            // proxy id cannot name a proxy.
            Some(own) if validate_proxy_id(own).is_ok() => app
                .store
                .get_proxy(own)
                .await?
                .filter(|p| p.owner_id == caller.user_id)
                .into_iter()
                .collect(),
            Some(_) => Vec::new(),
            None => app.store.list_proxies(&caller.user_id).await?,
        };
        let now = app.clock.now();
        let windows = SummaryWindows::at(now);
        let from = DateTime::from_timestamp_millis(windows.last_day_from_ms).unwrap_or(now);
        let to = DateTime::from_timestamp_millis(windows.to_ms).unwrap_or(now);
        let today = now.date_naive();
        let figures: Vec<ProxyFigures> = stream::iter(proxies)
            .map(|proxy| async move {
                // One epoch (E0) for both reads: each checks it again at its end.
                let epoch = app.store.fold_epoch(&proxy.proxy_id).await?;
                let (recent, totals) = futures::try_join!(
                    app.store.read_recent(
                        &proxy.proxy_id,
                        today,
                        from,
                        to,
                        LATEST_LOOKBACK_DAYS - 1,
                        epoch
                    ),
                    app.store.read_totals(&proxy.proxy_id, epoch),
                )?;
                let mut figures = ProxyFigures::new(
                    &proxy.proxy_id,
                    proxy.registered_at,
                    &recent.days,
                    &recent.buckets,
                    now,
                );
                figures.totals = totals;
                Ok::<_, ApiError>(figures)
            })
            .buffered(SCRAPE_CONCURRENCY)
            .try_collect()
            .await?;
        let text = encode(&figures)
            .map_err(|e| ApiError::Internal(format!("encoding the exposition: {e}")))?;
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", PROMETHEUS_CONTENT_TYPE)
            .header("cache-control", "no-store")
            .body(Body::Text(text))
            .map_err(|e| ApiError::Internal(format!("building response: {e}")))
    })
    .await
}
