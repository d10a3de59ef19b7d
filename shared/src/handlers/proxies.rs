use lambda_http::{Body, Request, Response, http::StatusCode};
use serde_json::Value;

use crate::api::{ListProxiesResponse, ProxyBody, RegisterProxyResponse};

use crate::auth::Scope;
use crate::domain::event::reject_unknown;
use crate::domain::{MAX_PROXY_NAME_CHARS, validate_proxy_id};
use crate::error::ApiError;
use crate::http::{App, authenticate, json_body, respond, success};
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
        let proxy = Proxy {
            proxy_id,
            name,
            owner_id: caller.user_id.clone(),
            registered_at: app.clock.now(),
            tier: caller.tier,
            fold_epoch: 0,
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

/// `GET /proxies`
pub async fn list_proxies(app: &App, request: Request) -> Response<Body> {
    respond(&request, async {
        let caller = authenticate(app, &request).await?;
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
