use chrono::Utc;
use lambda_http::{Body, Request, Response, http::StatusCode};
use serde_json::json;

use crate::auth::Scope;
use crate::domain::parse_day;
use crate::domain::rollup::Rollup;
use crate::http::{App, authenticate, owned_proxy, path_param, respond, success};

/// `GET /proxy/metrics/{proxyId}/daily/{date}`
pub async fn get_daily_metrics(app: &App, request: Request) -> Response<Body> {
    respond(&request, async {
        let caller = authenticate(app, &request)?;
        caller.require_scope(Scope::MetricsRead)?;
        let proxy_id = path_param(&request, "proxyId")?;
        let day = parse_day("date", &path_param(&request, "date")?)?;
        let proxy = owned_proxy(app, &caller, &proxy_id).await?;
        let events = app.store.day_events(&proxy.proxy_id, day).await?;
        let rollup = Rollup::of_events(day, &events);
        let metrics = rollup.daily_json(day, Some(proxy.registered_at), Utc::now());
        success(
            StatusCode::OK,
            &caller,
            json!({"proxyId": proxy.proxy_id, "date": metrics["date"].clone(), "metrics": metrics}),
        )
    })
    .await
}
