use lambda_http::{Body, Request, Response, http::StatusCode};
use serde_json::Value;

use crate::api::{ListProxiesResponse, ProxyBody, RegisterProxyResponse};

use crate::auth::{Caller, Scope};
use crate::domain::event::reject_unknown;
use crate::domain::tier::Tier;
use crate::domain::{MAX_PROXY_NAME_CHARS, validate_proxy_id};
use crate::error::ApiError;
use crate::http::{App, authenticate, json_body, respond, success, take_caller_limit};
use crate::storage::Proxy;

/// The fields of a registration body.
const REGISTER_FIELDS: &[&str] = &["proxyId", "name"];

/// `POST /proxies`
pub async fn register_proxy(app: &App, request: Request) -> Response<Body> {
    respond(&request, async {
        let caller = authenticate(app, &request).await?;
        caller.require_scope(Scope::ProxiesWrite)?;
        let body: Value = serde_json::from_slice(json_body(&request)?)
            .map_err(|e| ApiError::invalid(format!("The body is not valid JSON: {e}.")))?;
        let Value::Object(fields) = &body else {
            return Err(ApiError::invalid(
                "The body must be a JSON object: {\"proxyId\": ..., \"name\": ...}.",
            ));
        };
        // `{"proxy_id": ...}` must not register under a typo-free default.
        reject_unknown(fields, REGISTER_FIELDS, "a registration")?;
        let proxy_id = match body.get("proxyId") {
            Some(Value::String(id)) => id.clone(),
            Some(_) => return Err(ApiError::invalid("'proxyId' must be a string.")),
            None => return Err(ApiError::invalid("'proxyId' is required.")),
        };
        validate_proxy_id(&proxy_id)?;
        caller.require_proxy(&proxy_id)?;
        let name = match body.get("name") {
            None | Some(Value::Null) => None,
            Some(Value::String(n)) if n.chars().count() <= MAX_PROXY_NAME_CHARS => Some(n.clone()),
            Some(Value::String(_)) => {
                return Err(ApiError::invalid(format!(
                    "'name' is longer than {MAX_PROXY_NAME_CHARS} characters."
                )));
            }
            Some(_) => return Err(ApiError::invalid("'name' must be a string.")),
        };
        take_caller_limit(app, &caller)?;
        let proxy = Proxy {
            proxy_id,
            name,
            owner_id: caller.user_id.clone(),
            registered_at: app.clock.now(),
            tier: owner_tier(app, &caller).await?,
            fold_epoch: 0,
            bucket_retention: None,
            marked_at_ms: None,
            dims_since_ms: None,
        };
        app.store.register_proxy(&proxy).await?;
        success(
            app,
            StatusCode::CREATED,
            &caller,
            &RegisterProxyResponse {
                proxy: ProxyBody::of(&proxy),
            },
        )
    })
    .await
}

/// The tier a new proxy keeps for its owner (it sets raw retention). Only
/// the owner's user token says what that tier is: a proxy-scoped token's
/// `tier` claim is the proxy's, not the owner's, and never sets it. For such
/// a token the proxy takes the highest tier recorded on the owner's other
/// proxies (keeping more rather than deleting early), or the default tier
/// when there are none; the owner's next user-token request corrects it.
async fn owner_tier(app: &App, caller: &Caller) -> Result<Tier, ApiError> {
    if caller.proxy_id.is_none() {
        return Ok(caller.tier);
    }
    let proxies = app.store.list_proxies(&caller.user_id).await?;
    Ok(proxies
        .iter()
        .map(|p| p.tier)
        .max_by_key(|t| t.raw_retention_days())
        .unwrap_or(Tier::Free))
}

/// `GET /proxies`
pub async fn list_proxies(app: &App, request: Request) -> Response<Body> {
    respond(&request, async {
        let caller = authenticate(app, &request).await?;
        take_caller_limit(app, &caller)?;
        let mut proxies = app.store.list_proxies(&caller.user_id).await?;
        if let Some(own) = &caller.proxy_id {
            proxies.retain(|p| &p.proxy_id == own);
        }
        let list: Vec<ProxyBody> = proxies.iter().map(ProxyBody::of).collect();
        success(
            app,
            StatusCode::OK,
            &caller,
            &ListProxiesResponse {
                count: list.len(),
                proxies: list,
            },
        )
    })
    .await
}
