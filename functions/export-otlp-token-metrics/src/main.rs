//! Lambda `export-otlp-token-metrics`: builds its dependencies once, then hands
//! every OTLP/HTTP export of a proxy-scoped token (`POST /v1/metrics`) to
//! `proxy_metrics::handlers::export_otlp_token_metrics`.

use lambda_http::{Error, Request, run, service_fn, tracing};
use proxy_metrics::{App, handlers::export_otlp_token_metrics};

// One request at a time per container: a single-threaded runtime starts faster.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    let app = App::from_env().inspect_err(|e| tracing::error!("{e}"))?;
    let app = &app;
    run(service_fn(move |request: Request| async move {
        Ok::<_, Error>(export_otlp_token_metrics(app, request).await)
    }))
    .await
}
