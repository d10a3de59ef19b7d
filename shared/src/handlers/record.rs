use lambda_http::{Body, Request, Response, http::StatusCode};
use serde_json::{Value, json};

use crate::auth::Scope;
use crate::domain::event::parse_record_body;
use crate::http::{
    App, authenticate, header, json_body, owned_proxy, path_param, respond, success,
};
use crate::storage::EventStatus;

/// `POST /proxy/metrics/{proxyId}/record`
pub async fn record_metrics(app: &App, request: Request) -> Response<Body> {
    respond(&request, async {
        let caller = authenticate(app, &request).await?;
        caller.require_scope(Scope::MetricsWrite)?;
        let proxy_id = path_param(&request, "proxyId")?;
        crate::domain::validate_proxy_id(&proxy_id)?;
        caller.require_proxy(&proxy_id)?;
        // Validate before the ownership read: bad input costs no storage call.
        let now = app.clock.now();
        let idempotency_key = header(&request, "idempotency-key")?;
        let body = parse_record_body(json_body(&request)?, idempotency_key.as_deref(), now)?;
        let proxy = owned_proxy(app, &caller, &proxy_id).await?;
        let outcome = app
            .store
            .record_events(&proxy.proxy_id, &body.events, caller.tier, now)
            .await?;
        tracing::info!(
            proxy_id = %proxy.proxy_id,
            events = body.events.len(),
            write_units = outcome.write_units,
            transactions = outcome.transactions,
            "recorded"
        );
        let recorded = outcome
            .statuses
            .iter()
            .filter(|s| **s == EventStatus::Recorded)
            .count();
        let duplicates = outcome.statuses.len() - recorded;
        let events: Vec<Value> = body
            .events
            .iter()
            .zip(&outcome.statuses)
            .map(|(e, s)| json!({"eventId": e.event_id, "status": s.as_str()}))
            .collect();
        let mut response = json!({
            "proxyId": proxy.proxy_id,
            "recorded": recorded,
            "duplicates": duplicates,
            "events": events,
            "message": if recorded == 0 {
                "All events were already recorded (duplicates)"
            } else {
                "Metrics recorded successfully"
            },
        });
        if body.single {
            response["eventType"] = json!(body.events[0].event_type.as_str());
            response["eventId"] = json!(body.events[0].event_id);
        }
        let status = if recorded == 0 {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        success(app, status, &caller, response)
    })
    .await
}
