//! Lambda `evaluate-alerts`: invoked every minute by an EventBridge schedule
//! (or by hand with any JSON object); evaluates the alert rules, then sends
//! the outbox's due webhooks (`proxy_metrics::alerts::run`).

use lambda_runtime::{Error, LambdaEvent, run, service_fn, tracing};
use proxy_metrics::alerts::{AlertsConfig, run::run as evaluate};
use serde_json::Value;

// One request at a time per container: a single-threaded runtime starts faster.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    let store =
        proxy_metrics::storage::Store::from_env().inspect_err(|e| tracing::error!("{e}"))?;
    let config = AlertsConfig::from_env().inspect_err(|e| tracing::error!("{e}"))?;
    let (store, config) = (&store, &config);
    run(service_fn(move |_event: LambdaEvent<Value>| async move {
        let report = Box::pin(evaluate(store, config)).await.map_err(|e| {
            tracing::error!(error = %e, "evaluate-alerts failed");
            Error::from(e.to_string())
        })?;
        serde_json::to_value(report).map_err(|e| Error::from(e.to_string()))
    }))
    .await
}
