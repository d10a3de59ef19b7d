//! Lambda `aggregate-metrics`: invoked by an EventBridge schedule; builds its
//! dependencies once, then hands every event to `proxy_metrics::aggregate`.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use lambda_runtime::{Error, LambdaEvent, run, service_fn, tracing};
use proxy_metrics::App;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    let app = App::from_env()
        .await
        .inspect_err(|e| tracing::error!("{e}"))?;
    let app = &app;
    run(service_fn(
        move |event: LambdaEvent<EventBridgeEvent>| async move {
            tracing::info!(id = ?event.payload.id, "scheduled aggregation");
            // `{"detail": {"shards": [0, 1]}}` limits a run to those pending
            // shards (fan-out); any other scheduled event runs them all.
            let shards = proxy_metrics::aggregate::shards_from_detail(&event.payload.detail);
            let report = proxy_metrics::aggregate::run(&app.store, shards).await?;
            tracing::info!(?report, "aggregation done");
            Ok::<_, Error>(serde_json::to_value(report)?)
        },
    ))
    .await
}
