//! Lambda `get-prometheus-metrics` (`GET /metrics`): builds its dependencies
//! once, then hands every request to
//! `proxy_metrics::handlers::get_prometheus_metrics`.

use lambda_http::{Error, Request, run, service_fn, tracing};
use proxy_metrics::{App, handlers::get_prometheus_metrics};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    let app = App::from_env().inspect_err(|e| tracing::error!("{e}"))?;
    let app = &app;
    run(service_fn(move |request: Request| async move {
        Ok::<_, Error>(get_prometheus_metrics(app, request).await)
    }))
    .await
}
