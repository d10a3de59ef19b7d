//! `local-stack`: the whole service on one machine, no AWS account.
//!
//! - dynoxide on `127.0.0.1:$DYNAMODB_PORT`, file-backed under `$DATA_DIR`,
//!   holding the table `infra/template.yaml` defines;
//! - `cargo lambda watch` serving the API Gateway routes on `$API_PORT`;
//! - the EventBridge schedule emulated by invoking `aggregate-metrics` every
//!   `$AGGREGATION_INTERVAL_SECONDS` (0 turns it off).
//!
//! Ctrl-C (or SIGTERM) stops everything: the watcher runs in its own process
//! group, which is terminated as a whole.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

const TABLE_NAME: &str = "proxy-metrics";
/// The documented local default; never use it in a deployment.
const DEFAULT_JWT_SECRET: &str = "local-dev-secret-change-me";
const AGGREGATE_FUNCTION: &str = "aggregate-metrics";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn env_number(name: &str, default: u64) -> Result<u64, String> {
    env_or(name, &default.to_string())
        .parse()
        .map_err(|_| format!("{name} must be a whole number"))
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("local-stack: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let root = local_stack::workspace_root();
    let api_port = env_number("API_PORT", 9000)?;
    let dynamodb_port = env_number("DYNAMODB_PORT", 8000)?;
    let interval = env_number("AGGREGATION_INTERVAL_SECONDS", 60)?;
    let data_dir = PathBuf::from(env_or("DATA_DIR", &root.join(".local").to_string_lossy()));
    let jwt_secret = env_or("JWT_SECRET", DEFAULT_JWT_SECRET);

    let db = local_stack::file_database(&data_dir, TABLE_NAME)?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", dynamodb_port as u16))
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1:{dynamodb_port} for DynamoDB: {e}"))?;
    let dynamodb = local_stack::spawn_server(listener, db);
    eprintln!(
        "DynamoDB (dynoxide) on http://127.0.0.1:{dynamodb_port}, data in {}",
        data_dir.display()
    );

    let mut watcher = spawn_watcher(&root, api_port, dynamodb_port, &jwt_secret)?;
    let token = local_stack::demo_token(&jwt_secret, "demo-user", "pro", 30)?;
    eprintln!();
    eprintln!("API on http://127.0.0.1:{api_port}  (functions compile on first request)");
    eprintln!("Demo token (user demo-user, tier pro, 30 days):");
    eprintln!("  export TOKEN={token}");
    eprintln!();

    let schedule = async {
        if interval == 0 {
            return std::future::pending::<()>().await;
        }
        let mut tick = tokio::time::interval(Duration::from_secs(interval));
        tick.tick().await;
        loop {
            tick.tick().await;
            invoke_aggregation(api_port).await;
        }
    };

    let outcome = tokio::select! {
        _ = shutdown_signal() => Ok(()),
        status = watcher.wait() => Err(format!("cargo lambda watch exited: {status:?}")),
        _ = dynamodb => Err("the DynamoDB server stopped".to_string()),
        _ = schedule => Ok(()),
    };
    stop_group(&watcher);
    let _ = tokio::time::timeout(Duration::from_secs(5), watcher.wait()).await;
    eprintln!("local-stack stopped");
    outcome
}

fn spawn_watcher(
    root: &PathBuf,
    api_port: u64,
    dynamodb_port: u64,
    jwt_secret: &str,
) -> Result<Child, String> {
    let mut env_vars = vec![
        format!("DYNAMODB_ENDPOINT=http://127.0.0.1:{dynamodb_port}"),
        format!("JWT_SECRET={jwt_secret}"),
        format!("TABLE_NAME={TABLE_NAME}"),
    ];
    // JWT settings pass straight through to the functions.
    for name in [
        "JWT_ISSUER",
        "JWT_AUDIENCE",
        "JWT_JWKS",
        "JWT_JWKS_URL",
        "RUST_LOG",
    ] {
        if let Ok(v) = std::env::var(name) {
            env_vars.push(format!("{name}={v}"));
        }
    }
    let mut command = Command::new("cargo");
    command
        .current_dir(root)
        .args([
            "lambda",
            "watch",
            "--invoke-address",
            "127.0.0.1",
            "--invoke-port",
        ])
        .arg(api_port.to_string())
        .args(["--concurrency", "4"]);
    for v in env_vars {
        command.arg("--env-var").arg(v);
    }
    command
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    command
        .spawn()
        .map_err(|e| format!("cannot start `cargo lambda watch` (is cargo-lambda installed? run scripts/local-stack): {e}"))
}

/// Terminates the watcher and every function process it started.
fn stop_group(child: &Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a negative pid signals the process group we created.
        unsafe {
            libc::kill(-(pid as i32), libc::SIGTERM);
        }
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

/// One emulated EventBridge scheduled event through the watcher's invoke API.
async fn invoke_aggregation(api_port: u64) {
    let event = serde_json::json!({
        "version": "0", "id": uuid_like(), "detail-type": "Scheduled Event",
        "source": "aws.scheduler", "account": "000000000000",
        "time": local_stack::wall_clock().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "region": "us-east-1", "resources": [], "detail": {}
    });
    let path = format!("/2015-03-31/functions/{AGGREGATE_FUNCTION}/invocations");
    match http_post(api_port, &path, &event.to_string()).await {
        Ok(body) => eprintln!("scheduled aggregation: {body}"),
        Err(e) => eprintln!("scheduled aggregation failed: {e}"),
    }
}

fn uuid_like() -> String {
    format!(
        "{:x}",
        local_stack::wall_clock()
            .timestamp_nanos_opt()
            .unwrap_or_default()
    )
}

/// A minimal HTTP/1.1 POST over loopback (avoids an HTTP client dependency).
async fn http_post(port: u64, path: &str, body: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port as u16))
        .await
        .map_err(|e| e.to_string())?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(600),
        stream.read_to_string(&mut response),
    )
    .await
    .map_err(|_| "timed out".to_string())?
    .map_err(|e| e.to_string())?;
    Ok(response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string())
}
