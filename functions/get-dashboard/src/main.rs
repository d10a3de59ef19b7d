//! Lambda `get-dashboard` (`GET /dashboard`, `GET /dashboard/{asset+}`): the
//! dashboard page's files, embedded in the binary. It needs no table, no
//! token and no configuration, so it builds nothing: every request goes
//! straight to `proxy_metrics::handlers::get_dashboard`.

use lambda_http::{Error, Request, run, service_fn, tracing};
use proxy_metrics::handlers::get_dashboard;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    run(service_fn(|request: Request| async move {
        Ok::<_, Error>(get_dashboard(request))
    }))
    .await
}
