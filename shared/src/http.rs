//! What every HTTP handler shares: authentication, path and body
//! extraction, ownership, the success envelope and the error response.

use chrono::SecondsFormat;
use lambda_http::{Body, Request, RequestExt, Response, http::StatusCode};
use serde_json::Value;

pub use crate::app::App;
use crate::auth::Caller;
use crate::domain::validate_proxy_id;
use crate::error::ApiError;
use crate::storage::Proxy;

mod json_keys;
pub use json_keys::repeated_key;

/// The largest request body accepted (the contract's 1 MiB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Runs a handler body and turns its error into the contract's error response.
pub async fn respond<F>(request: &Request, handler: F) -> Response<Body>
where
    F: std::future::Future<Output = Result<Response<Body>, ApiError>>,
{
    match handler.await {
        Ok(response) => response,
        Err(error) => error.into_response(request_id(request).as_deref()),
    }
}

pub fn request_id(request: &Request) -> Option<String> {
    request
        .lambda_context_ref()
        .map(|c| c.request_id.clone())
        .filter(|id| !id.is_empty())
        .or_else(|| {
            request.request_context_ref().and_then(|c| match c {
                lambda_http::request::RequestContext::ApiGatewayV2(v2) => v2.request_id.clone(),
                _ => None,
            })
        })
}

pub async fn authenticate(app: &App, request: &Request) -> Result<Caller, ApiError> {
    let header = request
        .headers()
        .get("authorization")
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::Unauthorized("Malformed Authorization header.".into()))
        })
        .transpose()?;
    app.auth.authenticate(header).await
}

pub fn path_param(request: &Request, name: &str) -> Result<String, ApiError> {
    request
        .path_parameters_ref()
        .and_then(|p| p.first(name))
        .map(str::to_string)
        .ok_or_else(|| ApiError::invalid(format!("The path parameter '{name}' is missing.")))
}

pub fn query_param(request: &Request, name: &str) -> Option<String> {
    request
        .query_string_parameters_ref()
        .and_then(|q| q.first(name))
        .map(str::to_string)
}

pub fn header(request: &Request, name: &str) -> Result<Option<String>, ApiError> {
    request
        .headers()
        .get(name)
        .map(|v| {
            v.to_str()
                .map(str::to_string)
                .map_err(|_| ApiError::invalid(format!("The {name} header is not valid text.")))
        })
        .transpose()
}

/// The JSON body, within the size limit, declared as JSON (if declared at
/// all) and repeating no key within an object (every JSON body comes here).
pub fn json_body(request: &Request) -> Result<&[u8], ApiError> {
    if let Some(ct) = header(request, "content-type")? {
        let media = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if media != "application/json" && !media.ends_with("+json") {
            let shown: String = media.chars().take(64).collect();
            return Err(ApiError::invalid(format!(
                "Content-Type must be application/json, not '{shown}'."
            )));
        }
    }
    let bytes: &[u8] = match request.body() {
        Body::Empty => &[],
        Body::Text(t) => t.as_bytes(),
        Body::Binary(b) => b,
        _ => &[],
    };
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge(format!(
            "The body is {} bytes; at most {MAX_BODY_BYTES} (1 MiB) are accepted.",
            bytes.len()
        )));
    }
    if bytes.is_empty() {
        return Err(ApiError::invalid(
            "The request body is empty; a JSON object is expected.",
        ));
    }
    if let Some(repeated) = repeated_key(bytes) {
        return Err(ApiError::invalid(format!(
            "The body is not valid JSON: {repeated}; send each key once."
        )));
    }
    Ok(bytes)
}

/// Takes one token of the caller's own limit (keyed by `sub`): every
/// request that reads storage on a caller's behalf passes here first, so one
/// caller can cause only a bounded number of reads — of its own proxies or of
/// ids it does not own alike.
pub fn take_caller_limit(app: &App, caller: &Caller) -> Result<(), ApiError> {
    app.caller_limiter
        .take(&caller.user_id, app.clock.now())
        .map_err(|retry_after| ApiError::CallerRateLimited { retry_after })
}

/// The proxy named in the path, if the caller may act on it. An unknown proxy
/// and another user's proxy get the same 404, after the same single read,
/// which the caller's own limit pays for (a caller past it gets 429 before
/// the read).
pub async fn owned_proxy(app: &App, caller: &Caller, proxy_id: &str) -> Result<Proxy, ApiError> {
    validate_proxy_id(proxy_id)?;
    caller.require_proxy(proxy_id)?;
    take_caller_limit(app, caller)?;
    let mut proxy = match app.store.get_proxy(proxy_id).await? {
        Some(proxy) if proxy.owner_id == caller.user_id => proxy,
        _ => {
            return Err(ApiError::NotFound(format!(
                "No proxy '{proxy_id}' was found."
            )));
        }
    };
    // The proxy keeps its owner's tier (it sets raw retention): a user token
    // of another tier updates it; a proxy's own token never does.
    if caller.proxy_id.is_none() && caller.tier != proxy.tier {
        match app.store.update_proxy_tier(&proxy, caller.tier).await {
            Ok(()) => proxy.tier = caller.tier,
            Err(e) => tracing::warn!(proxy_id, error = %e, "recording the owner's tier failed"),
        }
    }
    Ok(proxy)
}

/// A success response: `body` plus the contract's `timestamp` (the app's
/// clock) and `tier`.
pub fn success(
    app: &App,
    status: StatusCode,
    caller: &Caller,
    body: &impl serde::Serialize,
) -> Result<Response<Body>, ApiError> {
    let mut body = serde_json::to_value(body)
        .map_err(|e| ApiError::Internal(format!("serialising a response: {e}")))?;
    if let Value::Object(map) = &mut body {
        map.insert("timestamp".into(), Value::String(response_timestamp(app)));
        map.insert("tier".into(), Value::String(caller.tier.as_str().into()));
    }
    json_response(status, body.to_string())
}

/// The contract's `timestamp` of a success response (the app's clock).
pub fn response_timestamp(app: &App) -> String {
    app.clock.now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A success response whose body already holds `timestamp` and `tier`,
/// serialized as it is (see [`crate::api::SortedSeriesBody`]).
pub fn success_serialized(
    status: StatusCode,
    body: &impl serde::Serialize,
) -> Result<Response<Body>, ApiError> {
    let text = serde_json::to_string(body)
        .map_err(|e| ApiError::Internal(format!("serialising a response: {e}")))?;
    json_response(status, text)
}

fn json_response(status: StatusCode, text: String) -> Result<Response<Body>, ApiError> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::Text(text))
        .map_err(|e| ApiError::Internal(format!("building response: {e}")))
}
