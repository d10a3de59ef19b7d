//! Where a function's init time goes: times one start-up step in a fresh
//! process (as a cold start runs it) and prints microseconds. Run by
//! `scripts/init-breakdown`, which starts a process per step and run and
//! reports medians (BENCHMARKS.md, "Cold start").
//!
//!   init_breakdown <step>
//!
//! Steps:
//! - `runtime`       a current-thread tokio runtime (what every main starts)
//! - `native-roots`  loading the system's root certificates (what an eager
//!   JWKS client or the SDK's default HTTPS client does)
//! - `aws-config`    `aws_config::load_defaults` + a DynamoDB client (the
//!   provider chain; environment credentials, as on Lambda)
//! - `store-client`  this service's DynamoDB client (environment settings,
//!   Amazon's roots only, no provider chain)
//! - `auth-hs256`    reading the JWT settings and building the Authenticator
//! - `app`           `App::from_env`: everything an API function's main builds

use std::time::Instant;

use proxy_metrics::App;
use proxy_metrics::auth::{AuthConfig, Authenticator};
use proxy_metrics::clock::Clock;
use proxy_metrics::config::{StoreConfig, Vars};

fn main() {
    let step = std::env::args().nth(1).unwrap_or_default();
    let started = Instant::now();
    let what = match step.as_str() {
        "runtime" => {
            let runtime = runtime();
            runtime.block_on(async {});
            "runtime".to_string()
        }
        "native-roots" => {
            let found = rustls_native_certs::load_native_certs();
            format!("{} roots", found.certs.len())
        }
        "aws-config" => {
            let runtime = runtime();
            runtime.block_on(async {
                let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .load()
                    .await;
                let client = aws_sdk_dynamodb::Client::new(&config);
                format!("{:?}", client.config().region())
            })
        }
        "store-client" => {
            let config = StoreConfig::from_vars(&Vars::from_env()).unwrap_or_else(|e| fail(&e));
            let client = config.dynamodb_client().unwrap_or_else(|e| fail(&e));
            format!("{:?}", client.config().region())
        }
        "auth-hs256" => {
            let config = AuthConfig::from_vars(&Vars::from_env()).unwrap_or_else(|e| fail(&e));
            let auth = Authenticator::new(&config, Clock::system());
            std::hint::black_box(&auth);
            "authenticator".to_string()
        }
        "app" => {
            let app = App::from_env().unwrap_or_else(|e| fail(&e));
            std::hint::black_box(&app);
            "app".to_string()
        }
        other => {
            eprintln!(
                "unknown step {other:?}: runtime, native-roots, aws-config, store-client, auth-hs256, app"
            );
            std::process::exit(2);
        }
    };
    let micros = started.elapsed().as_micros();
    println!("{micros} {what}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn fail(error: &dyn std::fmt::Display) -> ! {
    eprintln!("configuration error: {error}");
    std::process::exit(1);
}
