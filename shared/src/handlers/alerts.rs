//! `POST/GET /proxies/{proxyId}/alerts`, `DELETE …/{alertId}`,
//! `POST …/{alertId}/test`, `GET …/{alertId}/deliveries` (contract v3, "Alerts").

use lambda_http::{Body, Request, Response, http::StatusCode};
use serde_json::Value;

use crate::api::{
    AlertBody, CreateAlertResponse, DeliveryBody, ListAlertsResponse, ListDeliveriesResponse,
    TestAlertResponse,
};
use crate::auth::Scope;
use crate::domain::alert::eval::State;
use crate::domain::alert::target::{self, Refused};
use crate::domain::alert::webhook::format_secret;
use crate::domain::alert::{RuleSpec, rule_limit};
use crate::error::ApiError;
use crate::http::{App, authenticate, json_body, owned_proxy, path_param, respond, success};
use crate::storage::alerts::{AlertRule, OutboxItem};

fn not_configured() -> ApiError {
    ApiError::Internal("ALERTS_SECRET_KEY is not configured".into())
}

/// Alert ids: 1–64 characters of `[A-Za-z0-9_-]` (what the service issues).
fn alert_id_param(request: &Request) -> Result<String, ApiError> {
    let id = path_param(request, "alertId")?;
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(ApiError::NotFound("No such alert rule.".into()));
    }
    Ok(id)
}

/// Every address the webhook host resolves to must be allowed (the check is
/// repeated on the address each delivery connects to).
async fn check_resolved(url: &str, allow_loopback: bool) -> Result<(), ApiError> {
    let target = target::parse(url, allow_loopback)?;
    let addrs = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|_| ApiError::invalid("'webhookUrl' has a host that does not resolve."))?;
    for addr in addrs {
        match target::refused(addr.ip()) {
            None => {}
            Some(Refused::Loopback) if allow_loopback => {}
            Some(class) => {
                return Err(ApiError::invalid(format!(
                    "'webhookUrl' resolves to a refused address ({}).",
                    class.as_str()
                )));
            }
        }
    }
    Ok(())
}

/// `POST /proxies/{proxyId}/alerts`
pub async fn create_alert(app: &App, request: Request) -> Response<Body> {
    respond(&request, async {
        let caller = authenticate(app, &request).await?;
        caller.require_scope(Scope::ProxiesWrite)?;
        let proxy_id = path_param(&request, "proxyId")?;
        let proxy = owned_proxy(app, &caller, &proxy_id).await?;
        let body: Value = serde_json::from_slice(json_body(&request)?)
            .map_err(|e| ApiError::invalid(format!("The body is not valid JSON: {e}.")))?;
        let spec = RuleSpec::from_body(&body, app.allow_loopback_webhooks)?;
        check_resolved(&spec.webhook_url, app.allow_loopback_webhooks).await?;
        let key = app.alerts_key.as_ref().ok_or_else(not_configured)?;
        let alert_id = format!("alt_{}", uuid::Uuid::new_v4().simple());
        let secret = crate::alerts::secret::new_secret_bytes().map_err(ApiError::Internal)?;
        let now = app.clock.now();
        let rule = AlertRule {
            proxy_id: proxy.proxy_id.clone(),
            alert_id: alert_id.clone(),
            spec,
            created_at: now,
            state: State::Ok,
            state_since: now,
            sequence: 0,
            last_value: None,
            last_evaluated_at: None,
            last_close: None,
            webhook_disabled: false,
            sealed_secret: key.seal(&secret, &alert_id).map_err(ApiError::Internal)?,
        };
        app.store
            .create_alert(&rule, rule_limit(proxy.tier))
            .await?;
        success(
            app,
            StatusCode::CREATED,
            &caller,
            &CreateAlertResponse {
                alert: AlertBody::of(&rule),
                secret: format_secret(&secret),
            },
        )
    })
    .await
}

/// `GET /proxies/{proxyId}/alerts`
pub async fn list_alerts(app: &App, request: Request) -> Response<Body> {
    respond(&request, async {
        let caller = authenticate(app, &request).await?;
        caller.require_scope(Scope::MetricsRead)?;
        let proxy_id = path_param(&request, "proxyId")?;
        let proxy = owned_proxy(app, &caller, &proxy_id).await?;
        let rules = app.store.list_alerts(&proxy.proxy_id).await?;
        let alerts: Vec<AlertBody> = rules.iter().map(AlertBody::of).collect();
        success(
            app,
            StatusCode::OK,
            &caller,
            &ListAlertsResponse {
                proxy_id: proxy.proxy_id,
                count: alerts.len(),
                alerts,
            },
        )
    })
    .await
}

/// `DELETE /proxies/{proxyId}/alerts/{alertId}` → 204
pub async fn delete_alert(app: &App, request: Request) -> Response<Body> {
    respond(&request, async {
        let caller = authenticate(app, &request).await?;
        caller.require_scope(Scope::ProxiesWrite)?;
        let proxy_id = path_param(&request, "proxyId")?;
        let proxy = owned_proxy(app, &caller, &proxy_id).await?;
        let alert_id = alert_id_param(&request)?;
        if !app.store.delete_alert(&proxy.proxy_id, &alert_id).await? {
            return Err(ApiError::NotFound(format!(
                "No alert rule '{alert_id}' was found."
            )));
        }
        Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Body::Empty)
            .map_err(|e| ApiError::Internal(format!("building response: {e}")))
    })
    .await
}

async fn owned_rule(
    app: &App,
    request: &Request,
    scope: Scope,
) -> Result<(crate::auth::Caller, AlertRule), ApiError> {
    let caller = authenticate(app, request).await?;
    caller.require_scope(scope)?;
    let proxy_id = path_param(request, "proxyId")?;
    let proxy = owned_proxy(app, &caller, &proxy_id).await?;
    let alert_id = alert_id_param(request)?;
    let rule = app
        .store
        .get_alert(&proxy.proxy_id, &alert_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("No alert rule '{alert_id}' was found.")))?;
    Ok((caller, rule))
}

/// `POST /proxies/{proxyId}/alerts/{alertId}/test` → 202: a signed
/// `alert.test` delivery, queued in the outbox and (with the `alerts`
/// feature, as in the deployed function) attempted at once.
pub async fn test_alert(app: &App, request: Request) -> Response<Body> {
    respond(&request, async {
        let (caller, rule) = owned_rule(app, &request, Scope::ProxiesWrite).await?;
        let now = app.clock.now();
        let webhook_id = format!(
            "msg_{}_test_{}",
            rule.alert_id,
            uuid::Uuid::new_v4().simple()
        );
        let close = rule.last_close.unwrap_or(now.timestamp_millis());
        let size = i64::from(rule.spec.window_minutes) * 60_000;
        let item = OutboxItem {
            webhook_id: webhook_id.clone(),
            proxy_id: rule.proxy_id.clone(),
            alert_id: rule.alert_id.clone(),
            event_type: "alert.test".into(),
            body: crate::alerts::run_payload(
                &rule,
                "alert.test",
                rule.state,
                rule.state,
                rule.last_value,
                (close - size, close),
                now,
            ),
            attempts: 0,
            due_ms: now.timestamp_millis(),
            claimed_until_ms: 0,
        };
        app.store.enqueue_delivery(&item).await?;
        #[cfg(feature = "alerts")]
        if let Some(key) = &app.alerts_key {
            let config = crate::alerts::AlertsConfig {
                key: key.clone(),
                allow_loopback: app.allow_loopback_webhooks,
            };
            if let Err(e) =
                crate::alerts::run::deliver_one(&app.store, &config, &item, Some(&rule), now).await
            {
                // Queued: the scheduled run sends it.
                tracing::warn!(webhook_id, error = %e, "test delivery left to the scheduled run");
            }
        }
        success(
            app,
            StatusCode::ACCEPTED,
            &caller,
            &TestAlertResponse {
                alert_id: rule.alert_id,
                webhook_id,
            },
        )
    })
    .await
}

/// `GET /proxies/{proxyId}/alerts/{alertId}/deliveries`: the last 100 attempts.
pub async fn list_deliveries(app: &App, request: Request) -> Response<Body> {
    respond(&request, async {
        let (caller, rule) = owned_rule(app, &request, Scope::MetricsRead).await?;
        let deliveries: Vec<DeliveryBody> = app
            .store
            .list_deliveries(&rule.alert_id)
            .await?
            .iter()
            .map(DeliveryBody::of)
            .collect();
        success(
            app,
            StatusCode::OK,
            &caller,
            &ListDeliveriesResponse {
                alert_id: rule.alert_id,
                count: deliveries.len(),
                deliveries,
            },
        )
    })
    .await
}
