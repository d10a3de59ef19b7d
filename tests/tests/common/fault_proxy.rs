//! A fault-injecting HTTP proxy between the SDK client and dynoxide.
//!
//! It forwards every request verbatim (method, path, headers, body; the
//! DynamoDB JSON protocol is `POST /` with `x-amz-target`) and relays the
//! answer verbatim, except for the requests it picks to fail. A fault is
//! either scripted (the next matching requests, in order) or drawn at random
//! (a share of matching requests, from a weighted mix), and the configuration
//! can be switched at any time while requests flow.
//!
//! Faults: DynamoDB-shaped errors (`ThrottlingException`,
//! `ProvisionedThroughputExceededException`, HTTP 500 `InternalServerError`),
//! a delay before forwarding, a dropped connection before forwarding (the
//! store never sees the request) and a dropped connection after forwarding
//! (the store applied the request, the client never hears of it).

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// HTTP 400 `ThrottlingException`.
    Throttling,
    /// HTTP 400 `ProvisionedThroughputExceededException`.
    ProvisionedThroughputExceeded,
    /// HTTP 500 `InternalServerError`.
    InternalServerError,
    /// Waits, then forwards normally.
    Delay(Duration),
    /// Closes the connection without forwarding or answering.
    Drop,
    /// Forwards (the store applies the request), then closes the connection
    /// without answering: a lost response.
    DropAfterForward,
    /// A `TransactionCanceledException` whose every reason is this code
    /// (e.g. `ValidationError`), without forwarding.
    Cancelled(&'static str),
}

impl Fault {
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Throttling => "ThrottlingException",
            Fault::ProvisionedThroughputExceeded => "ProvisionedThroughputExceededException",
            Fault::InternalServerError => "InternalServerError",
            Fault::Delay(_) => "delay",
            Fault::Drop => "drop",
            Fault::DropAfterForward => "drop-after-forward",
            Fault::Cancelled(_) => "TransactionCanceledException",
        }
    }
}

#[derive(Debug, Clone)]
pub struct FaultConfig {
    /// Share of matching requests, 0.0..=1.0, that get a random fault.
    pub rate: f64,
    /// The weighted mix random faults are drawn from.
    pub mix: Vec<(Fault, u32)>,
    /// Only requests whose operation (the `x-amz-target` after the dot, e.g.
    /// `TransactWriteItems`) is listed are faulted; empty means every request.
    pub operations: Vec<String>,
    /// Faults for the next matching requests, in order, before any random one.
    pub script: VecDeque<Fault>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self::off()
    }
}

impl FaultConfig {
    /// Forwards everything untouched.
    pub fn off() -> Self {
        Self {
            rate: 0.0,
            mix: Vec::new(),
            operations: Vec::new(),
            script: VecDeque::new(),
        }
    }

    /// Every matching request gets `fault`.
    pub fn always(fault: Fault) -> Self {
        Self {
            rate: 1.0,
            mix: vec![(fault, 1)],
            ..Self::off()
        }
    }

    /// A share `rate` of matching requests gets a fault from `mix`.
    pub fn random(rate: f64, mix: &[(Fault, u32)]) -> Self {
        Self {
            rate,
            mix: mix.to_vec(),
            ..Self::off()
        }
    }

    /// The next matching requests get these faults, in order; then none.
    pub fn scripted(faults: &[Fault]) -> Self {
        Self {
            script: faults.iter().copied().collect(),
            ..Self::off()
        }
    }

    /// Restricts faults to these operations.
    pub fn only(mut self, operations: &[&str]) -> Self {
        self.operations = operations.iter().map(|o| o.to_string()).collect();
        self
    }
}

/// What the proxy saw and did.
#[derive(Debug, Clone, Default)]
pub struct FaultStats {
    /// Requests received, by operation.
    pub requests: BTreeMap<String, u64>,
    /// Requests that reached the store, by operation.
    pub forwarded: BTreeMap<String, u64>,
    /// Faults injected, by fault name.
    pub injected: BTreeMap<&'static str, u64>,
    /// Errors the store itself answered, by DynamoDB error code.
    pub upstream_errors: BTreeMap<String, u64>,
}

impl FaultStats {
    pub fn requests_of(&self, operation: &str) -> u64 {
        self.requests.get(operation).copied().unwrap_or(0)
    }

    pub fn forwarded_of(&self, operation: &str) -> u64 {
        self.forwarded.get(operation).copied().unwrap_or(0)
    }

    pub fn injected_total(&self) -> u64 {
        self.injected.values().sum()
    }
}

struct Shared {
    upstream: String,
    http: reqwest::Client,
    config: Mutex<FaultConfig>,
    rng: Mutex<StdRng>,
    stats: Mutex<FaultStats>,
}

pub struct FaultProxy {
    /// Where to point the SDK client.
    pub endpoint: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FaultProxy {
    /// Starts a proxy forwarding to `upstream` (e.g. `http://127.0.0.1:8000`),
    /// with faults off; `seed` makes the random faults reproducible.
    pub async fn start(upstream: &str, seed: u64) -> Self {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(64)
                .build()
                .expect("HTTP client"),
            config: Mutex::new(FaultConfig::off()),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            stats: Mutex::new(FaultStats::default()),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new()
            .fallback(handle)
            .with_state(shared.clone())
            .into_make_service_with_connect_info::<KillSwitch>();
        let server = tokio::spawn(async move {
            let _ = axum::serve(KillableListener(listener), app).await;
        });
        Self {
            endpoint,
            shared,
            server,
        }
    }

    /// Replaces the fault configuration; takes effect for the next request.
    pub fn set(&self, config: FaultConfig) {
        *self.shared.config.lock().unwrap() = config;
    }

    pub fn off(&self) {
        self.set(FaultConfig::off());
    }

    pub fn stats(&self) -> FaultStats {
        self.shared.stats.lock().unwrap().clone()
    }

    pub fn reset_stats(&self) {
        *self.shared.stats.lock().unwrap() = FaultStats::default();
    }
}

impl Shared {
    /// The fault for one request of `operation`, if any.
    fn decide(&self, operation: &str) -> Option<Fault> {
        let mut config = self.config.lock().unwrap();
        if !config.operations.is_empty() && !config.operations.iter().any(|o| o == operation) {
            return None;
        }
        if let Some(fault) = config.script.pop_front() {
            return Some(fault);
        }
        let total: u32 = config.mix.iter().map(|(_, w)| w).sum();
        if config.rate <= 0.0 || total == 0 {
            return None;
        }
        let mut rng = self.rng.lock().unwrap();
        if rng.random::<f64>() >= config.rate {
            return None;
        }
        let mut pick = rng.random_range(0..total);
        for (fault, weight) in &config.mix {
            if pick < *weight {
                return Some(*fault);
            }
            pick -= weight;
        }
        None
    }

    fn count(&self, f: impl FnOnce(&mut FaultStats)) {
        f(&mut self.stats.lock().unwrap());
    }

    async fn forward(
        &self,
        method: &axum::http::Method,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Response, String> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.upstream));
        for (name, value) in headers {
            if !is_hop_by_hop(name) {
                request = request.header(name, value);
            }
        }
        let upstream = request
            .body(body)
            .send()
            .await
            .map_err(|e| format!("upstream: {e}"))?;
        let status = upstream.status();
        let headers = upstream.headers().clone();
        let bytes = upstream
            .bytes()
            .await
            .map_err(|e| format!("upstream body: {e}"))?;
        if status.is_client_error() || status.is_server_error() {
            let code = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["__type"].as_str().map(str::to_string))
                .map(|t| t.rsplit('#').next().unwrap_or_default().to_string())
                .unwrap_or_else(|| status.to_string());
            self.count(|s| *s.upstream_errors.entry(code).or_default() += 1);
        }
        let mut response = Response::new(Body::from(bytes));
        *response.status_mut() = status;
        for (name, value) in &headers {
            if !is_hop_by_hop(name) {
                response.headers_mut().append(name, value.clone());
            }
        }
        Ok(response)
    }
}

/// Headers that describe one connection, not the message: the client on
/// each side sets its own (the body is relayed whole, so lengths match).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "transfer-encoding" | "content-length" | "upgrade" | "te"
    )
}

/// The body DynamoDB answers an error with.
fn dynamodb_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "__type": format!("com.amazonaws.dynamodb.v20120810#{code}"),
        "message": message,
    });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    headers.insert(
        "x-amzn-requestid",
        HeaderValue::from_str(&uuid::Uuid::new_v4().simple().to_string()).unwrap(),
    );
    response
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(switch): ConnectInfo<KillSwitch>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(_) => {
            switch.kill();
            return Response::new(Body::empty());
        }
    };
    let operation = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.rsplit('.').next())
        .unwrap_or("")
        .to_string();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    shared.count(|s| *s.requests.entry(operation.clone()).or_default() += 1);
    let fault = shared.decide(&operation);
    if let Some(f) = fault {
        shared.count(|s| *s.injected.entry(f.name()).or_default() += 1);
    }
    match fault {
        Some(Fault::Throttling) => {
            return dynamodb_error(
                StatusCode::BAD_REQUEST,
                "ThrottlingException",
                "Rate of requests exceeds the allowed throughput.",
            );
        }
        Some(Fault::ProvisionedThroughputExceeded) => {
            return dynamodb_error(
                StatusCode::BAD_REQUEST,
                "ProvisionedThroughputExceededException",
                "The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API.",
            );
        }
        Some(Fault::InternalServerError) => {
            return dynamodb_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "Internal server error",
            );
        }
        Some(Fault::Drop) => {
            switch.kill();
            return Response::new(Body::empty());
        }
        Some(Fault::Cancelled(code)) => {
            let actions = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["TransactItems"].as_array().map(Vec::len))
                .unwrap_or(1);
            let reasons: Vec<serde_json::Value> = (0..actions)
                .map(|_| serde_json::json!({"Code": code, "Message": "One or more parameter values were invalid"}))
                .collect();
            let body = serde_json::json!({
                "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
                "message": format!("Transaction cancelled, please refer cancellation reasons for specific reasons [{code}]"),
                "CancellationReasons": reasons,
            });
            let mut response =
                dynamodb_error(StatusCode::BAD_REQUEST, "TransactionCanceledException", "");
            *response.body_mut() = Body::from(body.to_string());
            return response;
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::DropAfterForward) | None => {}
    }
    let result = shared
        .forward(&parts.method, &path, &parts.headers, body)
        .await;
    if result.is_ok() {
        shared.count(|s| *s.forwarded.entry(operation).or_default() += 1);
    }
    match (fault, result) {
        (Some(Fault::DropAfterForward), _) | (_, Err(_)) => {
            switch.kill();
            Response::new(Body::empty())
        }
        (_, Ok(response)) => response,
    }
}

// ------------------------------------------------------------------
// Connections that a handler can close without answering: the handler flips
// the connection's switch, after which every write fails and every read ends,
// so hyper drops the connection before a byte of the response leaves.

#[derive(Clone)]
struct KillSwitch(Arc<AtomicBool>);

impl KillSwitch {
    fn kill(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn killed(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

struct KillableStream {
    inner: TcpStream,
    switch: KillSwitch,
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.switch.killed() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.switch.killed() {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.switch.killed() {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

struct KillableListener(TcpListener);

impl Listener for KillableListener {
    type Io = KillableStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((inner, addr)) => {
                    let _ = inner.set_nodelay(true);
                    let switch = KillSwitch(Arc::new(AtomicBool::new(false)));
                    return (KillableStream { inner, switch }, addr);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

impl Connected<IncomingStream<'_, KillableListener>> for KillSwitch {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> Self {
        stream.io().switch.clone()
    }
}
