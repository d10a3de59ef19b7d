//! `local-stack`: the whole service on one machine, no AWS account.
//!
//! - DynamoDB: dynoxide on `127.0.0.1:$DYNAMODB_PORT`, file-backed under
//!   `$DATA_DIR`, holding the table `infra/template.yaml` defines — or, when
//!   `DYNAMODB_ENDPOINT` is set, that endpoint (the table is created there if
//!   missing);
//! - on `$API_PORT`, a front door (`front.rs`) standing in for API Gateway:
//!   a path or method outside the routes gets 404 at once, the rest goes to
//! - `cargo lambda watch --only-lambda-apis` on a private port, serving the
//!   API Gateway routes (and the Lambda invoke API), with the functions' prebuilt
//!   binaries (`target/debug/<function>`, built by `scripts/local-stack` with
//!   the same command as `scripts/test`) started here as Lambda runtime
//!   clients, `$FUNCTION_INSTANCES` of each, so several clients are served at
//!   once and nothing compiles on a request;
//! - the EventBridge schedules emulated by invoking `aggregate-metrics` every
//!   `$AGGREGATION_INTERVAL_SECONDS` and `evaluate-alerts` every
//!   `$ALERTS_INTERVAL_SECONDS` (60 each; 0 turns one off).
//!
//! The alert functions get `ALERTS_SECRET_KEY` (the documented local key
//! unless set) and `ALLOW_LOOPBACK_WEBHOOKS=1` (unless set otherwise): the
//! local stack's webhooks may go to `http://127.0.0.1`, a deployment's never.
//!
//! The functions get their settings as process environment, unchanged (a
//! JWKS is JSON with quotes and commas). Ctrl-C (or SIGTERM) stops
//! everything: the watcher and the functions run in one process group, which
//! is terminated as a whole.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use local_stack::{AGGREGATE_FUNCTION, EVALUATE_ALERTS_FUNCTION, LOCAL_ALERTS_SECRET_KEY};
use tokio::process::{Child, Command};

const TABLE_NAME: &str = "proxy-metrics";
/// The documented local default; never use it in a deployment.
const DEFAULT_JWT_SECRET: &str = "local-dev-secret-change-me";
/// Settings passed through to the functions unchanged when set.
const PASSED_THROUGH: &[&str] = &[
    "JWT_SECRET",
    "JWT_JWKS",
    "JWT_JWKS_URL",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "RUST_LOG",
    "AWS_LAMBDA_LOG_FORMAT",
    "RECORD_RATE_PER_PROXY",
    "RECORD_BURST_PER_PROXY",
    "REQUEST_RATE_PER_CALLER",
    "REQUEST_BURST_PER_CALLER",
];

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn env_set(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
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
    let alerts_interval = env_number("ALERTS_INTERVAL_SECONDS", 60)?;
    let instances = env_number("FUNCTION_INSTANCES", 2)?.max(1);
    let data_dir = PathBuf::from(env_or("DATA_DIR", &root.join(".local").to_string_lossy()));
    let jwks_configured = env_set("JWT_JWKS").is_some() || env_set("JWT_JWKS_URL").is_some();
    let jwt_secret = env_or("JWT_SECRET", DEFAULT_JWT_SECRET);

    let functions = functions(&root)?;
    // The functions are built beside this binary (same profile, same target
    // directory, wherever CARGO_TARGET_DIR puts it).
    let binaries = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(PathBuf::from))
        .unwrap_or_else(|| root.join("target/debug"));
    let missing: Vec<&String> = functions
        .iter()
        .filter(|f| !binaries.join(f).is_file())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the functions {missing:?} are not built in {}: run scripts/local-stack (it builds them first)",
            binaries.display()
        ));
    }

    let definition = local_stack::table_definition(&local_stack::template_path(), TABLE_NAME)?;
    let (endpoint, dynamodb) = match env_set("DYNAMODB_ENDPOINT") {
        Some(endpoint) => {
            let created = local_stack::ensure_table_at(&endpoint, &definition).await?;
            eprintln!(
                "DynamoDB at {endpoint} (DYNAMODB_ENDPOINT), table {TABLE_NAME} {}",
                if created { "created" } else { "found" }
            );
            (endpoint, None)
        }
        None => {
            let db = local_stack::file_database(&data_dir, TABLE_NAME)?;
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", dynamodb_port as u16))
                .await
                .map_err(|e| {
                    format!("cannot listen on 127.0.0.1:{dynamodb_port} for DynamoDB: {e}")
                })?;
            let server = local_stack::spawn_server(listener, db);
            eprintln!(
                "DynamoDB (dynoxide) on http://127.0.0.1:{dynamodb_port}, data in {}",
                data_dir.display()
            );
            (format!("http://127.0.0.1:{dynamodb_port}"), Some(server))
        }
    };

    // The front door takes the API port first (a port in use fails here,
    // before anything starts); the watcher listens behind it.
    let routes = local_stack::front::Routes::from_cargo_toml(&root.join("Cargo.toml"))?;
    let front_listener = tokio::net::TcpListener::bind(("127.0.0.1", api_port as u16))
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1:{api_port} for the API: {e}"))?;
    let watcher_port = free_port().await?;
    let mut watcher = spawn_watcher(&root, watcher_port)?;
    let group = watcher.id().ok_or("cargo lambda watch exited at once")? as i32;
    wait_for_port(watcher_port, &mut watcher).await?;
    let front = local_stack::front::spawn(front_listener, routes, watcher_port as u16);

    let mut function_env: Vec<(String, String)> = vec![
        ("TABLE_NAME".into(), TABLE_NAME.into()),
        ("DYNAMODB_ENDPOINT".into(), endpoint.clone()),
    ];
    for (name, default) in [
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "local"),
        ("AWS_SECRET_ACCESS_KEY", "local"),
    ] {
        function_env.push((name.into(), env_or(name, default)));
    }
    if !jwks_configured {
        function_env.push(("JWT_SECRET".into(), jwt_secret.clone()));
    }
    function_env.push((
        "ALERTS_SECRET_KEY".into(),
        env_or("ALERTS_SECRET_KEY", LOCAL_ALERTS_SECRET_KEY),
    ));
    function_env.push((
        "ALLOW_LOOPBACK_WEBHOOKS".into(),
        env_or("ALLOW_LOOPBACK_WEBHOOKS", "1"),
    ));
    for name in PASSED_THROUGH {
        if let Some(value) = env_set(name)
            && !(jwks_configured && *name == "JWT_SECRET")
        {
            function_env.push((name.to_string(), value));
        }
    }
    let mut pool = FunctionPool {
        binaries,
        watcher_port,
        env: function_env,
        group,
        children: Vec::new(),
    };
    for function in &functions {
        for _ in 0..instances {
            pool.start(function)?;
        }
    }
    eprintln!(
        "started {} function instances ({instances} of each of {} functions)",
        pool.children.len(),
        functions.len()
    );

    eprintln!();
    eprintln!("API on http://127.0.0.1:{api_port}  (ready)");
    if jwks_configured {
        eprintln!(
            "Tokens are checked against the configured JWKS (no HS256 demo token: it would not work)."
        );
    } else {
        let token = local_stack::demo_token(&jwt_secret, "demo-user", "pro", 30)?;
        eprintln!("Demo token (user demo-user, tier pro, 30 days):");
        eprintln!("  export TOKEN={token}");
    }
    eprintln!();

    let schedule = async {
        tokio::join!(
            every(interval, AGGREGATE_FUNCTION, watcher_port),
            every(alerts_interval, EVALUATE_ALERTS_FUNCTION, watcher_port),
        );
    };
    let dynamodb_stopped = async {
        match dynamodb {
            Some(server) => {
                let _ = server.await;
            }
            None => std::future::pending::<()>().await,
        }
    };

    let outcome = tokio::select! {
        _ = shutdown_signal() => Ok(()),
        status = watcher.wait() => Err(format!("cargo lambda watch exited: {status:?}")),
        _ = front => Err("the API front stopped".to_string()),
        _ = dynamodb_stopped => Err("the DynamoDB server stopped".to_string()),
        _ = schedule => Ok(()),
        e = pool.supervise() => Err(e),
    };
    stop_group(group);
    let _ = tokio::time::timeout(Duration::from_secs(5), watcher.wait()).await;
    eprintln!("local-stack stopped");
    outcome
}

/// Every function the router or the schedule names (the crates in `functions/`).
fn functions(root: &Path) -> Result<BTreeSet<String>, String> {
    let dir = root.join("functions");
    let entries =
        std::fs::read_dir(&dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    Ok(entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect())
}

fn spawn_watcher(root: &Path, port: u64) -> Result<Child, String> {
    let mut command = Command::new("cargo");
    command
        .current_dir(root)
        .args([
            "lambda",
            "watch",
            "--only-lambda-apis",
            "--invoke-address",
            "127.0.0.1",
            "--invoke-port",
        ])
        .arg(port.to_string())
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    command
        .spawn()
        .map_err(|e| format!("cannot start `cargo lambda watch` (is cargo-lambda installed? run scripts/local-stack): {e}"))
}

/// A loopback port free now, for the watcher behind the front door.
async fn free_port() -> Result<u64, String> {
    let probe = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| format!("cannot find a free port for the watcher: {e}"))?;
    let port = probe
        .local_addr()
        .map_err(|e| format!("cannot find a free port for the watcher: {e}"))?
        .port();
    Ok(u64::from(port))
}

async fn wait_for_port(port: u64, watcher: &mut Child) -> Result<(), String> {
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port as u16))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if let Ok(Some(status)) = watcher.try_wait() {
            return Err(format!("cargo lambda watch exited: {status}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "cargo lambda watch did not listen on {port} within a minute"
    ))
}

/// The function processes, each a Lambda runtime client of the watcher.
struct FunctionPool {
    binaries: PathBuf,
    watcher_port: u64,
    env: Vec<(String, String)>,
    /// The watcher's process group: stopping it stops them all.
    group: i32,
    children: Vec<(String, Child)>,
}

impl FunctionPool {
    fn start(&mut self, function: &str) -> Result<(), String> {
        let mut command = Command::new(self.binaries.join(function));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{}/.rt/{function}", self.watcher_port),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", function)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .envs(
                self.env
                    .iter()
                    .filter(|(k, _)| local_stack::function_gets(function, k))
                    .map(|(k, v)| (k, v)),
            )
            .stdin(Stdio::null())
            .process_group(self.group)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {function}: {e}"))?;
        self.children.push((function.to_string(), child));
        Ok(())
    }

    /// Restarts a function instance that exits (as Lambda would start a
    /// fresh one); returns only if one cannot be restarted.
    async fn supervise(&mut self) -> String {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut exited = Vec::new();
            for (i, (name, child)) in self.children.iter_mut().enumerate() {
                if let Ok(Some(status)) = child.try_wait() {
                    eprintln!("function {name} exited ({status}); starting it again");
                    exited.push(i);
                }
            }
            for i in exited.into_iter().rev() {
                let (name, _) = self.children.remove(i);
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Err(e) = self.start(&name) {
                    return e;
                }
            }
        }
    }
}

/// Terminates the watcher and every function process.
fn stop_group(group: i32) {
    // SAFETY: kill(2) with a negative pid signals the process group we created.
    unsafe {
        libc::kill(-group, libc::SIGTERM);
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

/// Invokes `function` every `seconds` (never when 0), as its EventBridge
/// schedule would; the first run is one interval after start.
async fn every(seconds: u64, function: &str, watcher_port: u64) {
    if seconds == 0 {
        return std::future::pending::<()>().await;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(seconds));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        invoke_scheduled(watcher_port, function).await;
    }
}

/// One emulated EventBridge scheduled event through the watcher's invoke API.
async fn invoke_scheduled(watcher_port: u64, function: &str) {
    let now = local_stack::wall_clock();
    let event = serde_json::json!({
        "version": "0", "id": format!("{:x}", now.timestamp_nanos_opt().unwrap_or_default()),
        "detail-type": "Scheduled Event", "source": "aws.scheduler", "account": "000000000000",
        "time": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "region": "us-east-1", "resources": [], "detail": {}
    });
    let path = format!("/2015-03-31/functions/{function}/invocations");
    match http_post(watcher_port, &path, &event.to_string()).await {
        Ok(body) => eprintln!("scheduled {function}: {body}"),
        Err(e) => eprintln!("scheduled {function} failed: {e}"),
    }
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
