//! Lambda `aggregate-metrics`: invoked by an EventBridge schedule (or by an
//! operator with a command); builds its dependencies once, then hands every
//! payload to `proxy_metrics::aggregate::invoke`.

use lambda_runtime::{Error, LambdaEvent, run, service_fn, tracing};
use proxy_metrics::aggregate::{RunLimits, invoke};
use serde_json::Value;

// One request at a time per container: a single-threaded runtime starts faster.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    // The store only: no token checks, no JWT configuration.
    let store =
        proxy_metrics::storage::Store::from_env().inspect_err(|e| tracing::error!("{e}"))?;
    let store = &store;
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        // Any JSON object: a scheduled event, `{"detail": {"shards": [..]}}`,
        // or a command (`release`, `migrate`).
        let limits = RunLimits::for_invocation(store, event.context.deadline);
        let answer = Box::pin(invoke(store, &event.payload, limits)).await;
        answer.map_err(|e| {
            tracing::error!(error = %e, "aggregate-metrics failed");
            Error::from(e.to_string())
        })
    }))
    .await
}
