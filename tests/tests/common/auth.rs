//! What the token tests share: fixture keys and signed tokens, the seven
//! authenticated routes, a local JWKS server and a counter of storage calls.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response as AxumResponse};
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use lambda_http::{Body, Request, Response};
use proxy_metrics::App;
use proxy_metrics::handlers;
use serde_json::{Value, json};

use super::*;

pub const RSA_1: &[u8] = include_bytes!("../../fixtures/rsa-1.pem");
pub const RSA_2: &[u8] = include_bytes!("../../fixtures/rsa-2.pem");
pub const EC_1: &[u8] = include_bytes!("../../fixtures/ec-1.pem");
pub const EC_2: &[u8] = include_bytes!("../../fixtures/ec-2.pem");

// ---------------------------------------------------------------- keys, tokens

pub fn encoding_key(alg: Algorithm, pem: &[u8]) -> EncodingKey {
    match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem).unwrap(),
        _ => EncodingKey::from_secret(pem),
    }
}

/// The public JWK of a fixture key.
pub fn jwk(kid: &str, alg: Algorithm, pem: &[u8]) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(&encoding_key(alg, pem), alg).unwrap();
    jwk.common.key_id = Some(kid.to_string());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk
}

pub fn jwks(keys: Vec<Jwk>) -> String {
    serde_json::to_string(&JwkSet { keys }).unwrap()
}

/// Claims of a token issued at `at` (for a harness whose clock moved).
pub fn claims_at(sub: &str, at: chrono::DateTime<chrono::Utc>) -> Value {
    let now = at.timestamp();
    json!({"sub": sub, "exp": now + 3600, "iat": now})
}

pub fn claims(sub: &str, extra: Value) -> Value {
    let now = now().timestamp();
    let mut claims = json!({"sub": sub, "exp": now + 3600, "iat": now});
    if let (Value::Object(c), Value::Object(e)) = (&mut claims, extra) {
        for (k, v) in e {
            if v.is_null() {
                c.remove(&k);
            } else {
                c.insert(k, v);
            }
        }
    }
    claims
}

pub fn sign(alg: Algorithm, kid: Option<&str>, key: &[u8], claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &encoding_key(alg, key)).unwrap()
}

pub fn rs(kid: &str, pem: &[u8], sub: &str) -> String {
    sign(Algorithm::RS256, Some(kid), pem, &claims(sub, json!({})))
}

pub fn es(kid: &str, pem: &[u8], sub: &str) -> String {
    sign(Algorithm::ES256, Some(kid), pem, &claims(sub, json!({})))
}

pub fn b64(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
        if pad {
            out.extend(std::iter::repeat_n('=', 3 - chunk.len()));
        }
    }
    out
}

pub const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
pub const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `header.claims.` with no signature.
pub fn unsigned(header: Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(header.to_string().as_bytes(), URL_SAFE, false),
        b64(claims.to_string().as_bytes(), URL_SAFE, false)
    )
}

// ---------------------------------------------------------------- routes

#[derive(Debug, Clone, Copy)]
pub enum Route {
    Register,
    List,
    Record,
    Daily,
    Range,
    Aggregation,
    Summary,
    Series,
    Breakdown,
}

pub const ROUTES: [Route; 9] = [
    Route::Register,
    Route::List,
    Route::Record,
    Route::Daily,
    Route::Range,
    Route::Aggregation,
    Route::Summary,
    Route::Series,
    Route::Breakdown,
];
/// The routes that act on a proxy named in the path.
pub const PROXY_ROUTES: [Route; 7] = [
    Route::Record,
    Route::Daily,
    Route::Range,
    Route::Aggregation,
    Route::Summary,
    Route::Series,
    Route::Breakdown,
];

/// A valid request for `route` on `proxy_id` (for register, the proxy to create).
pub fn request(route: Route, token: &str, proxy_id: &str) -> Request {
    let today = today();
    let req = match route {
        Route::Register => {
            return Req::new("POST", "/proxies")
                .bearer(token)
                .json(json!({"proxyId": proxy_id}))
                .build();
        }
        Route::List => return Req::new("GET", "/proxies").bearer(token).build(),
        Route::Record => Req::new("POST", "/proxy/metrics/{proxyId}/record")
            .json(json!({"eventType": "request", "metrics": {"requestCount": 1}})),
        Route::Daily => {
            Req::new("GET", "/proxy/metrics/{proxyId}/daily/{date}").param("date", &today)
        }
        Route::Range => Req::new("GET", "/proxy/metrics/{proxyId}/daily")
            .query("startDate", &today)
            .query("endDate", &today),
        Route::Aggregation => Req::new("GET", "/proxy/metrics/{proxyId}/aggregation")
            .query("periodStart", &today)
            .query("periodEnd", &today),
        Route::Summary => Req::new("GET", "/proxy/metrics/{proxyId}/summary"),
        Route::Series => Req::new("GET", "/proxy/metrics/{proxyId}/series")
            .query("from", &iso(now() - chrono::Duration::hours(1)))
            .query("to", &iso(now()))
            .query("step", "5m"),
        Route::Breakdown => Req::new("GET", "/proxy/metrics/{proxyId}/breakdown")
            .query("by", "route")
            .query("startDate", &today)
            .query("endDate", &today),
    };
    req.param("proxyId", proxy_id).bearer(token).build()
}

pub async fn handle(app: &App, route: Route, request: Request) -> Response<Body> {
    // Each handler's future boxed: this one would otherwise be as large as
    // the largest of them, in every test future that calls it.
    match route {
        Route::Register => Box::pin(handlers::register_proxy(app, request)).await,
        Route::List => Box::pin(handlers::list_proxies(app, request)).await,
        Route::Record => Box::pin(handlers::record_metrics(app, request)).await,
        Route::Daily => Box::pin(handlers::get_daily_metrics(app, request)).await,
        Route::Range => Box::pin(handlers::get_daily_range(app, request)).await,
        Route::Aggregation => Box::pin(handlers::get_aggregation(app, request)).await,
        Route::Summary => Box::pin(handlers::get_summary(app, request)).await,
        Route::Series => Box::pin(handlers::get_series(app, request)).await,
        Route::Breakdown => Box::pin(handlers::get_breakdown(app, request)).await,
    }
}

pub async fn call(app: &App, route: Route, token: &str, proxy_id: &str) -> (u16, Value) {
    let (status, body, _) = call_with_headers(app, route, token, proxy_id).await;
    (status, body)
}

pub async fn call_with_headers(
    app: &App,
    route: Route,
    token: &str,
    proxy_id: &str,
) -> (u16, Value, std::collections::HashMap<String, String>) {
    parts(handle(app, route, request(route, token, proxy_id)).await)
}

/// Status of `GET /proxies` with this token: the cheapest authenticated call.
pub async fn list_status(app: &App, token: &str) -> u16 {
    call(app, Route::List, token, "").await.0
}

// ---------------------------------------------------------------- local servers

#[derive(Default)]
struct JwksState {
    status: u16,
    body: String,
    hits: AtomicUsize,
}

/// Serves a JWKS on 127.0.0.1 and counts the fetches.
pub struct JwksServer {
    pub url: String,
    state: Arc<Mutex<JwksState>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve_jwks(State(state): State<Arc<Mutex<JwksState>>>) -> AxumResponse {
    let state = state.lock().unwrap();
    state.hits.fetch_add(1, Ordering::SeqCst);
    let status = StatusCode::from_u16(state.status).unwrap();
    (
        status,
        [
            ("content-type", "application/json"),
            ("cache-control", "public, max-age=300"),
        ],
        state.body.clone(),
    )
        .into_response()
}

impl JwksServer {
    pub async fn start(body: String) -> Self {
        let state = Arc::new(Mutex::new(JwksState {
            status: 200,
            body,
            hits: AtomicUsize::new(0),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        let app = Router::new()
            .route("/.well-known/jwks.json", axum::routing::get(serve_jwks))
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, state, server }
    }

    pub fn publish(&self, status: u16, body: String) {
        let mut state = self.state.lock().unwrap();
        state.status = status;
        state.body = body;
    }

    pub fn hits(&self) -> usize {
        self.state.lock().unwrap().hits.load(Ordering::SeqCst)
    }
}

/// A pass-through HTTP proxy in front of dynoxide that records the DynamoDB
/// operation of every request (`x-amz-target`), to count storage calls.
pub struct StoreCounter {
    pub endpoint: String,
    ops: Arc<Mutex<Vec<String>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for StoreCounter {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[derive(Clone)]
struct Upstream {
    url: String,
    http: reqwest::Client,
    ops: Arc<Mutex<Vec<String>>>,
}

async fn forward(State(up): State<Upstream>, headers: HeaderMap, body: Bytes) -> AxumResponse {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let op = target.rsplit('.').next().unwrap_or_default().to_string();
    up.ops.lock().unwrap().push(op);
    let mut request = up.http.post(&up.url).body(body.to_vec());
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name.as_str(), value.as_bytes());
        }
    }
    let response = request.send().await.unwrap();
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    let mut out = HeaderMap::new();
    for (name, value) in response.headers() {
        if name != "content-length" && name != "transfer-encoding" {
            out.insert(
                axum::http::HeaderName::from_bytes(name.as_str().as_bytes()).unwrap(),
                axum::http::HeaderValue::from_bytes(value.as_bytes()).unwrap(),
            );
        }
    }
    let bytes = response.bytes().await.unwrap();
    (status, out, bytes.to_vec()).into_response()
}

impl StoreCounter {
    pub async fn start(upstream: &str) -> Self {
        let ops = Arc::new(Mutex::new(Vec::new()));
        let up = Upstream {
            url: format!("{upstream}/"),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            ops: ops.clone(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new().fallback(forward).with_state(up);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            endpoint,
            ops,
            server,
        }
    }

    /// The operations seen since the last call.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.ops.lock().unwrap())
    }
}

/// An app on the harness's store whose storage calls go through a counter.
pub async fn counted_app(h: &Harness) -> (App, StoreCounter) {
    let counter = StoreCounter::start(&h.endpoint).await;
    let app = App::with_clock(
        &config(&h.endpoint, &[]),
        sdk_client(&counter.endpoint),
        h.app.clock.clone(),
    );
    (app, counter)
}
