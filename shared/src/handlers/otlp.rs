//! `POST /proxy/metrics/{proxyId}/v1/metrics` and `POST /v1/metrics`: OTLP/HTTP
//! metrics exports (contract v3, "OTLP/HTTP ingestion").
//!
//! The response is in the request's format: `ExportMetricsServiceResponse`
//! on success, `google.rpc.Status` (protobuf) or the contract's error body
//! (JSON) on failure. A failure of ours is never a 500: OTLP exporters drop
//! 500s (data loss) but retry 503s, and a retried export is counted once.

use chrono::SecondsFormat;
use lambda_http::{Body, Request, Response};

use crate::auth::Scope;
use crate::domain::dimensions::{cardinality_cap, dimension_pages};
use crate::error::ApiError;
use crate::http::{App, authenticate, header, owned_proxy, path_param, request_id};
use crate::otlp::body::{self, Format};
use crate::otlp::map::{self, GroupState, Limits, Report};
use crate::storage::otlp::{MAX_OTLP_STATE_BYTES, Planned};
use crate::storage::{Destination, IDEMPOTENCY_RETENTION};

/// Where the export's proxy comes from.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// `{proxyId}` of the path.
    Path,
    /// The `proxy_id` claim of a proxy-scoped token.
    Token,
}

/// `POST /proxy/metrics/{proxyId}/v1/metrics`
pub async fn export_otlp_metrics(app: &App, request: Request) -> Response<Body> {
    export(app, request, Target::Path).await
}

/// `POST /v1/metrics` (a proxy-scoped token: the proxy is its `proxy_id`).
pub async fn export_otlp_token_metrics(app: &App, request: Request) -> Response<Body> {
    export(app, request, Target::Token).await
}

async fn export(app: &App, request: Request, target: Target) -> Response<Body> {
    let id = request_id(&request);
    // The format decides how even an error is answered; without one we
    // know, the error is the contract's JSON.
    let format = match header(&request, "content-type").and_then(|ct| Format::of(ct.as_deref())) {
        Ok(format) => format,
        Err(error) => {
            // Who is asking comes first, as on every route: 401 before 415.
            if let Err(unauthenticated) = authenticate(app, &request).await {
                return unauthenticated.into_response(id.as_deref());
            }
            return error.into_response(id.as_deref());
        }
    };
    match handle(app, &request, target, format).await {
        Ok(response) => response,
        Err(error) => error_response(format, error, id.as_deref()),
    }
}

/// The error in the request's format; never a 500 (see the module docs).
fn error_response(format: Format, error: ApiError, request_id: Option<&str>) -> Response<Body> {
    let error = match error {
        ApiError::Internal(detail) => ApiError::ServiceUnavailable(detail),
        other => other,
    };
    match format {
        Format::Json => error.into_response(request_id),
        Format::Protobuf => {
            let mut builder = Response::builder()
                .status(error.status())
                .header("content-type", body::PROTOBUF);
            if let Some(seconds) = error.retry_after() {
                builder = builder.header("retry-after", seconds.to_string());
            }
            builder
                .body(Body::Binary(body::status_body(&error, request_id)))
                .unwrap_or_else(|_| Response::new(Body::Empty))
        }
    }
}

async fn handle(
    app: &App,
    request: &Request,
    target: Target,
    format: Format,
) -> Result<Response<Body>, ApiError> {
    let caller = authenticate(app, request).await?;
    caller.require_scope(Scope::MetricsWrite)?;
    let proxy_id = match target {
        Target::Path => path_param(request, "proxyId")?,
        Target::Token => caller.proxy_id.clone().ok_or_else(|| {
            ApiError::Forbidden(
                "POST /v1/metrics takes a proxy-scoped token (one with a proxy_id claim); \
                 with a user token, export to /proxy/metrics/{proxyId}/v1/metrics."
                    .into(),
            )
        })?,
    };
    crate::domain::validate_proxy_id(&proxy_id)?;
    caller.require_proxy(&proxy_id)?;
    // Decoded before the ownership read: a bad body costs no storage call.
    let raw: &[u8] = match request.body() {
        Body::Text(t) => t.as_bytes(),
        Body::Binary(b) => b,
        _ => &[],
    };
    let bytes = body::decompress(header(request, "content-encoding")?.as_deref(), raw)?;
    let extracted = map::extract(&body::decode(format, &bytes)?);
    drop(bytes);
    let now = app.clock.now();
    let proxy = owned_proxy(app, &caller, &proxy_id).await?;
    app.record_limiter
        .take(&proxy.proxy_id, now)
        .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    let to = Destination {
        proxy_id: &proxy.proxy_id,
        retention_days: proxy.tier.raw_retention_days(),
        marked_at_ms: proxy.marked_at_ms,
        dimension_pages: dimension_pages(proxy.tier),
        dims_since_ms: proxy.dims_since_ms,
    };
    let limits = Limits {
        max_state_bytes: MAX_OTLP_STATE_BYTES,
        retention: IDEMPOTENCY_RETENTION,
    };
    let points = extracted.points();
    let mut report = extracted.report;
    let (mut accepted, mut duplicates, mut events, mut write_units) = (0u64, 0u64, 0usize, 0.0);
    let mut attempts = 0u32;
    for group in &extracted.groups {
        let written = app
            .store
            .record_otlp_group(to, cardinality_cap(proxy.tier), group.key, now, |stored| {
                let mut state = match stored.map(GroupState::decode) {
                    None => GroupState::default(),
                    Some(Ok(state)) => state,
                    Some(Err(e)) => {
                        // Never blocks the proxy: its series start afresh.
                        tracing::error!(proxy_id = %proxy.proxy_id, error = %e, "unreadable OTLP state, reset");
                        GroupState::default()
                    }
                };
                let applied = map::apply(&mut state, group, now, limits);
                Planned {
                    state: applied.changed.then(|| state.encode()),
                    report: (applied.accepted, applied.duplicates, applied.events.len(), applied.report),
                    events: applied.events,
                }
            })
            .await?;
        let (a, d, e, r): (u64, u64, usize, Report) = written.report;
        accepted += a;
        duplicates += d;
        events += e;
        report.merge(r);
        write_units += written.write_units;
        attempts += written.attempts;
    }
    tracing::info!(
        proxy_id = %proxy.proxy_id,
        points,
        accepted,
        duplicates,
        rejected = report.rejected,
        ignored = report.ignored.len(),
        events,
        write_units,
        attempts,
        "OTLP export recorded"
    );
    let timestamp = now.to_rfc3339_opts(SecondsFormat::Millis, true);
    let body = body::success_body(
        format,
        report.rejected,
        report.message(),
        (&timestamp, caller.tier.as_str()),
    );
    Response::builder()
        .status(200)
        .header("content-type", format.content_type())
        .body(match format {
            Format::Protobuf => Body::Binary(body),
            Format::Json => Body::Text(String::from_utf8(body).unwrap_or_default()),
        })
        .map_err(|e| ApiError::Internal(format!("building response: {e}")))
}
