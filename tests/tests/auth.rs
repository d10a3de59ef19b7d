//! Authentication, tenancy and hostile input, through the handlers against
//! dynoxide: key types and algorithms (HS256, RS256/ES256 via JWKS inline or
//! served by a local HTTP server, with rotation), scopes and proxy-scoped
//! tokens on every route, ownership, body and path limits, 500 bodies.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response as AxumResponse};
use common::*;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use lambda_http::{Body, Request, Response};
use proxy_metrics::App;
use proxy_metrics::handlers;
use serde_json::{Value, json};

const RSA_1: &[u8] = include_bytes!("../fixtures/rsa-1.pem");
const RSA_2: &[u8] = include_bytes!("../fixtures/rsa-2.pem");
const EC_1: &[u8] = include_bytes!("../fixtures/ec-1.pem");
const EC_2: &[u8] = include_bytes!("../fixtures/ec-2.pem");

// ---------------------------------------------------------------- keys, tokens

fn encoding_key(alg: Algorithm, pem: &[u8]) -> EncodingKey {
    match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem).unwrap(),
        _ => EncodingKey::from_secret(pem),
    }
}

/// The public JWK of a fixture key.
fn jwk(kid: &str, alg: Algorithm, pem: &[u8]) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(&encoding_key(alg, pem), alg).unwrap();
    jwk.common.key_id = Some(kid.to_string());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk
}

fn jwks(keys: Vec<Jwk>) -> String {
    serde_json::to_string(&JwkSet { keys }).unwrap()
}

/// Claims of a token issued at `at` (for a harness whose clock moved).
fn claims_at(sub: &str, at: chrono::DateTime<chrono::Utc>) -> Value {
    let now = at.timestamp();
    json!({"sub": sub, "exp": now + 3600, "iat": now})
}

fn claims(sub: &str, extra: Value) -> Value {
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

fn sign(alg: Algorithm, kid: Option<&str>, key: &[u8], claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &encoding_key(alg, key)).unwrap()
}

fn rs(kid: &str, pem: &[u8], sub: &str) -> String {
    sign(Algorithm::RS256, Some(kid), pem, &claims(sub, json!({})))
}

fn es(kid: &str, pem: &[u8], sub: &str) -> String {
    sign(Algorithm::ES256, Some(kid), pem, &claims(sub, json!({})))
}

fn b64(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
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

const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `header.claims.` with no signature.
fn unsigned(header: Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(header.to_string().as_bytes(), URL_SAFE, false),
        b64(claims.to_string().as_bytes(), URL_SAFE, false)
    )
}

// ---------------------------------------------------------------- routes

#[derive(Debug, Clone, Copy)]
enum Route {
    Register,
    List,
    Record,
    Daily,
    Range,
    Aggregation,
    Summary,
}

const ROUTES: [Route; 7] = [
    Route::Register,
    Route::List,
    Route::Record,
    Route::Daily,
    Route::Range,
    Route::Aggregation,
    Route::Summary,
];
/// The routes that act on a proxy named in the path.
const PROXY_ROUTES: [Route; 5] = [
    Route::Record,
    Route::Daily,
    Route::Range,
    Route::Aggregation,
    Route::Summary,
];

/// A valid request for `route` on `proxy_id` (for register, the proxy to create).
fn request(route: Route, token: &str, proxy_id: &str) -> Request {
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
    };
    req.param("proxyId", proxy_id).bearer(token).build()
}

async fn handle(app: &App, route: Route, request: Request) -> Response<Body> {
    match route {
        Route::Register => handlers::register_proxy(app, request).await,
        Route::List => handlers::list_proxies(app, request).await,
        Route::Record => handlers::record_metrics(app, request).await,
        Route::Daily => handlers::get_daily_metrics(app, request).await,
        Route::Range => handlers::get_daily_range(app, request).await,
        Route::Aggregation => handlers::get_aggregation(app, request).await,
        Route::Summary => handlers::get_summary(app, request).await,
    }
}

async fn call(app: &App, route: Route, token: &str, proxy_id: &str) -> (u16, Value) {
    let (status, body, _) = call_with_headers(app, route, token, proxy_id).await;
    (status, body)
}

async fn call_with_headers(
    app: &App,
    route: Route,
    token: &str,
    proxy_id: &str,
) -> (u16, Value, std::collections::HashMap<String, String>) {
    parts(handle(app, route, request(route, token, proxy_id)).await)
}

/// Status of `GET /proxies` with this token: the cheapest authenticated call.
async fn list_status(app: &App, token: &str) -> u16 {
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
struct JwksServer {
    url: String,
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
    async fn start(body: String) -> Self {
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

    fn publish(&self, status: u16, body: String) {
        let mut state = self.state.lock().unwrap();
        state.status = status;
        state.body = body;
    }

    fn hits(&self) -> usize {
        self.state.lock().unwrap().hits.load(Ordering::SeqCst)
    }
}

/// A pass-through HTTP proxy in front of dynoxide that records the DynamoDB
/// operation of every request (`x-amz-target`), to count storage calls.
struct StoreCounter {
    endpoint: String,
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
    async fn start(upstream: &str) -> Self {
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
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.ops.lock().unwrap())
    }
}

/// An app on the harness's store whose storage calls go through a counter.
async fn counted_app(h: &Harness) -> (App, StoreCounter) {
    let counter = StoreCounter::start(&h.endpoint).await;
    let app = App::with_clock(
        &config(&h.endpoint, &[]),
        sdk_client(&counter.endpoint),
        h.app.clock.clone(),
    );
    (app, counter)
}

// ---------------------------------------------------------------- key types

#[tokio::test]
async fn jwks_url_is_fetched_lazily_cached_and_refreshed_for_a_new_kid() {
    let server = JwksServer::start(jwks(vec![jwk("rsa-1", Algorithm::RS256, RSA_1)])).await;
    // JWT_SECRET is set too (the harness always sets it): the JWKS is the only source.
    let h = Harness::start_with(&[("JWT_JWKS_URL", &server.url)]).await;
    assert_eq!(
        server.hits(),
        0,
        "nothing is fetched before the first request"
    );

    let (status, body) = call(
        &h.app,
        Route::Register,
        &rs("rsa-1", RSA_1, "alice"),
        "edge-1",
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(server.hits(), 1);
    for _ in 0..5 {
        assert_eq!(list_status(&h.app, &rs("rsa-1", RSA_1, "alice")).await, 200);
    }
    assert_eq!(server.hits(), 1, "cached: no fetch per request");

    // HS256 is refused even with the right JWT_SECRET, without any fetch.
    let (status, body) = call(&h.app, Route::List, &user_token("alice"), "").await;
    assert_error(status, &body, 401, "UNAUTHORIZED");
    assert_eq!(server.hits(), 1);

    // Rotation: the issuer publishes rsa-2 and ec-1 beside rsa-1.
    server.publish(
        200,
        jwks(vec![
            jwk("rsa-1", Algorithm::RS256, RSA_1),
            jwk("rsa-2", Algorithm::RS256, RSA_2),
            jwk("ec-1", Algorithm::ES256, EC_1),
        ]),
    );
    let (status, body) = call(&h.app, Route::List, &rs("rsa-2", RSA_2, "alice"), "").await;
    assert_eq!(status, 200, "a token with the new kid is accepted: {body}");
    assert_eq!(body["count"], 1);
    assert_eq!(server.hits(), 2, "one refresh for the unknown kid");
    assert_eq!(list_status(&h.app, &es("ec-1", EC_1, "alice")).await, 200);
    assert_eq!(list_status(&h.app, &rs("rsa-1", RSA_1, "alice")).await, 200);
    assert_eq!(server.hits(), 2);

    // Retiring rsa-1 at the issuer: cached keys stay in use until they expire.
    server.publish(200, jwks(vec![jwk("rsa-2", Algorithm::RS256, RSA_2)]));
    assert_eq!(list_status(&h.app, &rs("rsa-1", RSA_1, "alice")).await, 200);
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn unknown_kid_refresh_is_rate_limited() {
    let server = JwksServer::start(jwks(vec![jwk("rsa-1", Algorithm::RS256, RSA_1)])).await;
    let h = Harness::start_with(&[("JWT_JWKS_URL", &server.url)]).await;
    assert_eq!(list_status(&h.app, &rs("rsa-1", RSA_1, "alice")).await, 200);
    assert_eq!(server.hits(), 1);

    // A flood of tokens with kids the set lacks, sequential and concurrent:
    // one refetch at most in the minute.
    for i in 0..5 {
        let token = es(&format!("forged-{i}"), EC_2, "mallory");
        assert_eq!(list_status(&h.app, &token).await, 401);
    }
    let tokens: Vec<String> = (0..10)
        .map(|i| es(&format!("burst-{i}"), EC_2, "mallory"))
        .collect();
    let statuses = futures::future::join_all(tokens.iter().map(|t| list_status(&h.app, t))).await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(server.hits(), 2, "exactly one refresh for unknown kids");

    // Within that minute even a genuinely new key waits for the next refresh
    // (or the cache's expiry): the limit holds for everyone.
    server.publish(
        200,
        jwks(vec![
            jwk("rsa-1", Algorithm::RS256, RSA_1),
            jwk("ec-2", Algorithm::ES256, EC_2),
        ]),
    );
    assert_eq!(list_status(&h.app, &es("ec-2", EC_2, "alice")).await, 401);
    assert_eq!(server.hits(), 2);
    // The cached set still holds one key: a token without kid may use it (no fetch).
    let no_kid = sign(Algorithm::RS256, None, RSA_1, &claims("alice", json!({})));
    assert_eq!(list_status(&h.app, &no_kid).await, 200);
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn jwks_unavailable_at_first_use_is_a_503_to_retry_without_details() {
    let server = JwksServer::start(String::new()).await;
    server.publish(503, "upstream exploded at db-7.internal".into());
    let h = Harness::start_with(&[("JWT_JWKS_URL", &server.url)]).await;
    let (status, body, headers) =
        call_with_headers(&h.app, Route::List, &rs("rsa-1", RSA_1, "alice"), "").await;
    assert_error(status, &body, 503, "SERVICE_UNAVAILABLE");
    assert_eq!(headers.get("retry-after").map(String::as_str), Some("2"));
    let text = body.to_string();
    for leak in ["jwks", "127.0.0.1", "exploded", "JWKS"] {
        assert!(!text.contains(leak), "{leak} leaked: {text}");
    }
    assert_eq!(server.hits(), 1);
    // Backing off: the next request does not hammer the key server…
    server.publish(200, jwks(vec![jwk("rsa-1", Algorithm::RS256, RSA_1)]));
    let (status, _) = call(&h.app, Route::List, &rs("rsa-1", RSA_1, "alice"), "").await;
    assert_eq!(status, 503);
    assert_eq!(server.hits(), 1);
    // …and once the back-off has passed, the keys are fetched.
    h.app.clock.advance(chrono::Duration::seconds(11));
    let token = sign(
        Algorithm::RS256,
        Some("rsa-1"),
        RSA_1,
        &claims_at("alice", h.app.clock.now()),
    );
    assert_eq!(list_status(&h.app, &token).await, 200);
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn cached_keys_outlive_a_failing_key_server_for_a_day_only() {
    let server = JwksServer::start(jwks(vec![jwk("rsa-1", Algorithm::RS256, RSA_1)])).await;
    let h = Harness::start_with(&[("JWT_JWKS_URL", &server.url)]).await;
    let at = |h: &Harness| {
        sign(
            Algorithm::RS256,
            Some("rsa-1"),
            RSA_1,
            &claims_at("alice", h.app.clock.now()),
        )
    };
    assert_eq!(list_status(&h.app, &at(&h)).await, 200);
    // the key server goes down; the cache (10 min by default) expires
    server.publish(500, "down".into());
    h.app.clock.advance(chrono::Duration::minutes(11));
    assert_eq!(
        list_status(&h.app, &at(&h)).await,
        200,
        "stale keys serve meanwhile"
    );
    h.app.clock.advance(chrono::Duration::hours(23));
    assert_eq!(
        list_status(&h.app, &at(&h)).await,
        200,
        "still within a day of expiry"
    );
    // a day past the keys' lifetime: a key removed from the JWKS must stop
    // working even though nothing could be fetched
    h.app.clock.advance(chrono::Duration::hours(2));
    let (status, body, headers) = call_with_headers(&h.app, Route::List, &at(&h), "").await;
    assert_error(status, &body, 503, "SERVICE_UNAVAILABLE");
    assert!(headers.contains_key("retry-after"));
    // the server is back: keys again
    server.publish(200, jwks(vec![jwk("rsa-1", Algorithm::RS256, RSA_1)]));
    h.app.clock.advance(chrono::Duration::seconds(11));
    assert_eq!(list_status(&h.app, &at(&h)).await, 200);
}

#[tokio::test]
async fn inline_jwks_accepts_rs256_and_es256_only() {
    let set = jwks(vec![
        jwk("rsa-1", Algorithm::RS256, RSA_1),
        jwk("ec-1", Algorithm::ES256, EC_1),
    ]);
    let h = Harness::start_with(&[("JWT_JWKS", &set)]).await;
    assert_eq!(list_status(&h.app, &rs("rsa-1", RSA_1, "alice")).await, 200);
    assert_eq!(list_status(&h.app, &es("ec-1", EC_1, "alice")).await, 200);
    let c = claims("alice", json!({}));
    for (why, token) in [
        ("HS256 with the JWT_SECRET", user_token("alice")),
        (
            "HS256 naming an RSA kid",
            sign(Algorithm::HS256, Some("rsa-1"), SECRET.as_bytes(), &c),
        ),
        ("signed by an unpublished key", rs("rsa-1", RSA_2, "alice")),
        ("ES256 on the RSA kid", es("rsa-1", EC_1, "alice")),
        ("RS256 on the EC kid", rs("ec-1", RSA_1, "alice")),
        ("unknown kid", rs("rsa-9", RSA_1, "alice")),
        ("no kid, two keys", sign(Algorithm::RS256, None, RSA_1, &c)),
        (
            "alg none",
            unsigned(json!({"alg": "none", "kid": "rsa-1"}), &c),
        ),
        (
            "unsigned RS256",
            unsigned(json!({"alg": "RS256", "kid": "rsa-1"}), &c),
        ),
    ] {
        let (status, body) = call(&h.app, Route::List, &token, "").await;
        assert_eq!(status, 401, "{why}: {body}");
        assert_error(status, &body, 401, "UNAUTHORIZED");
    }
}

#[tokio::test]
async fn hs256_config_refuses_other_algorithms_and_bad_tokens() {
    let h = Harness::start().await;
    let now = now().timestamp();
    let hs = |extra: Value| token("alice", extra);
    let c = claims("alice", json!({}));
    let forged = sign(Algorithm::HS256, None, b"not-the-secret-0123456789", &c);
    for (why, token) in [
        ("forged signature", forged),
        ("RS256 token", rs("rsa-1", RSA_1, "alice")),
        ("ES256 token", es("ec-1", EC_1, "alice")),
        ("alg none", unsigned(json!({"alg": "none"}), &c)),
        (
            "alg none, typ JWT",
            unsigned(json!({"alg": "none", "typ": "JWT"}), &c),
        ),
        ("expired", hs(json!({"exp": now - 3600}))),
        ("not yet valid", hs(json!({"nbf": now + 3600}))),
        ("issued in the future", hs(json!({"iat": now + 3600}))),
        ("missing sub", hs(json!({"sub": null}))),
        ("missing exp", hs(json!({"exp": null}))),
        ("empty sub", hs(json!({"sub": ""}))),
    ] {
        let (status, body) = call(&h.app, Route::List, &token, "").await;
        assert_eq!(status, 401, "{why}: {body}");
        assert_error(status, &body, 401, "UNAUTHORIZED");
    }
    // within the 60 s leeway
    assert_eq!(
        list_status(&h.app, &hs(json!({"exp": now - 20}))).await,
        200
    );
    assert_eq!(
        list_status(&h.app, &hs(json!({"nbf": now + 20}))).await,
        200
    );
}

#[tokio::test]
async fn issuer_and_audience_are_enforced_when_configured() {
    let h = Harness::start_with(&[
        ("JWT_ISSUER", "https://issuer.example"),
        ("JWT_AUDIENCE", "proxy-metrics"),
    ])
    .await;
    let right = json!({"iss": "https://issuer.example", "aud": "proxy-metrics"});
    assert_eq!(list_status(&h.app, &token("alice", right)).await, 200);
    for wrong in [
        json!({"iss": "https://evil.example", "aud": "proxy-metrics"}),
        json!({"iss": "https://issuer.example", "aud": "another-api"}),
        json!({"aud": "proxy-metrics"}),
        json!({"iss": "https://issuer.example"}),
    ] {
        let (status, body) = call(&h.app, Route::List, &token("alice", wrong.clone()), "").await;
        assert_eq!(status, 401, "{wrong}: {body}");
    }
}

// ---------------------------------------------------------------- scopes, tenancy

#[tokio::test]
async fn every_route_requires_its_scope() {
    let h = Harness::start().await;
    let alice = user_token("alice");
    assert_eq!(h.register(&alice, "edge-1").await.0, 201);
    let scoped = |scope: &str| token("alice", json!({"scope": scope}));
    for route in ROUTES {
        let (needed, others) = match route {
            Route::Register => ("proxies:write", "metrics:read metrics:write"),
            Route::Record => ("metrics:write", "metrics:read proxies:write"),
            Route::List => ("", "metrics:write"),
            _ => ("metrics:read", "metrics:write proxies:write"),
        };
        let proxy = if matches!(route, Route::Register) {
            "edge-new"
        } else {
            "edge-1"
        };
        let (status, body) = call(&h.app, route, &scoped(others), proxy).await;
        if needed.is_empty() {
            assert_eq!(status, 200, "{route:?} needs no scope: {body}");
            continue;
        }
        assert_error(status, &body, 403, "FORBIDDEN");
        assert!(body["message"].as_str().unwrap().contains(needed), "{body}");
        // a scope-less token on an unknown proxy: still 403, decided first
        let (status, _) = call(&h.app, route, &scoped(""), "ghost").await;
        assert_eq!(status, 403, "{route:?}");
        let (status, body) = call(&h.app, route, &scoped(needed), proxy).await;
        assert!(
            status == 200 || status == 201,
            "{route:?} with {needed}: {body}"
        );
    }
}

#[tokio::test]
async fn proxy_scoped_tokens_act_on_their_own_proxy_only() {
    let h = Harness::start().await;
    let alice = user_token("alice");
    for id in ["edge-1", "edge-2"] {
        assert_eq!(h.register(&alice, id).await.0, 201);
    }
    let edge1 = token("alice", json!({"proxy_id": "edge-1", "tier": "pro"}));
    let (app, store) = counted_app(&h).await;
    for route in PROXY_ROUTES {
        for other in ["edge-2", "ghost-proxy"] {
            store.take();
            let (status, body) = call(&app, route, &edge1, other).await;
            assert_error(status, &body, 403, "FORBIDDEN");
            assert!(
                store.take().is_empty(),
                "{route:?}: decided before any storage call"
            );
        }
        let (status, body) = call(&app, route, &edge1, "edge-1").await;
        assert!(status == 200 || status == 201, "{route:?}: {body}");
    }
    // registering any other id is outside its reach too
    let (status, body) = call(&app, Route::Register, &edge1, "edge-3").await;
    assert_error(status, &body, 403, "FORBIDDEN");
    // it lists its own proxy only
    let (status, body) = call(&app, Route::List, &edge1, "").await;
    assert_eq!(status, 200);
    assert_eq!(body["count"], 1);
    assert_eq!(body["proxies"][0]["proxyId"], "edge-1");

    // The token a proxy should hold: its proxy_id and metrics:write only.
    let proxy_token = token(
        "alice",
        json!({"proxy_id": "edge-1", "scope": "metrics:write"}),
    );
    assert_eq!(
        call(&app, Route::Record, &proxy_token, "edge-1").await.0,
        201
    );
    for route in [Route::Daily, Route::Summary, Route::Register] {
        assert_eq!(
            call(&app, route, &proxy_token, "edge-1").await.0,
            403,
            "{route:?}"
        );
    }
    assert_eq!(
        call(&app, Route::Record, &proxy_token, "edge-2").await.0,
        403
    );
    // and a proxy token of alice's is no key to anyone else's proxy of that name
    let mallory_proxy = token(
        "mallory",
        json!({"proxy_id": "edge-1", "scope": "metrics:write"}),
    );
    assert_eq!(
        call(&app, Route::Record, &mallory_proxy, "edge-1").await.0,
        404
    );
}

#[tokio::test]
async fn foreign_and_unknown_proxies_get_the_same_404_after_one_read() {
    let h = Harness::start().await;
    let alice = user_token("alice");
    let mallory = user_token("mallory");
    assert_eq!(h.register(&alice, "edge-1").await.0, 201);
    let (app, store) = counted_app(&h).await;
    for route in PROXY_ROUTES {
        store.take();
        let (s_foreign, b_foreign) = call(&app, route, &mallory, "edge-1").await;
        let foreign_ops = store.take();
        let (s_unknown, b_unknown) = call(&app, route, &mallory, "edge-0").await;
        let unknown_ops = store.take();
        assert_error(s_foreign, &b_foreign, 404, "NOT_FOUND");
        assert_error(s_unknown, &b_unknown, 404, "NOT_FOUND");
        // the same words but for the id the caller gave
        assert_eq!(
            b_foreign["message"]
                .as_str()
                .unwrap()
                .replace("edge-1", "ID"),
            b_unknown["message"]
                .as_str()
                .unwrap()
                .replace("edge-0", "ID"),
            "{route:?}"
        );
        assert_eq!(foreign_ops, vec!["GetItem".to_string()], "{route:?}");
        assert_eq!(unknown_ops, foreign_ops, "{route:?}");
    }
    // nothing was recorded on alice's proxy
    let (_, body) = h.daily(&alice, "edge-1", &today()).await;
    assert_eq!(body["metrics"]["eventCount"], 0);
}

// ---------------------------------------------------------------- hostile input

#[tokio::test]
async fn hostile_path_parameters_are_400_before_any_storage_call() {
    let h = Harness::start().await;
    let alice = user_token("alice");
    assert_eq!(h.register(&alice, "edge-1").await.0, 201);
    let (app, store) = counted_app(&h).await;
    let long = "x".repeat(129);
    let bad_ids = [
        "",
        "a#b",
        "a/b",
        "../etc",
        "edge 1",
        "edge%2F1",
        "édge",
        "edge\u{0}1",
        "PROXY#edge-1",
        long.as_str(),
    ];
    let today = today();
    for route in PROXY_ROUTES {
        for id in bad_ids {
            store.take();
            let request = hostile_request(route, &alice, id, &today);
            let (status, body, _) = parts(handle(&app, route, request).await);
            assert_error(status, &body, 400, "INVALID_REQUEST");
            assert!(store.take().is_empty(), "{route:?} {id:?}");
        }
    }
    // dates: strict YYYY-MM-DD, refused before they reach a key (at most the
    // ownership read has happened)
    let dates = [
        "2024-02-30",
        "2024-1-5",
        "2024-01-15T00:00:00Z",
        "+2024-01-15",
        "2024-01-15 ",
        " 2024-01-15",
        "１２３４-01-01",
        "2024-01-15\u{0}",
        "99999-01-01",
        "2024-13-01",
        "0000-00-00",
        "2024-01-15/../x",
    ];
    for route in [Route::Daily, Route::Range, Route::Aggregation] {
        for date in dates {
            store.take();
            let request = hostile_request(route, &alice, "edge-1", date);
            let (status, body, _) = parts(handle(&app, route, request).await);
            assert_error(status, &body, 400, "INVALID_REQUEST");
            let ops = store.take();
            assert!(
                ops.iter().all(|op| op == "GetItem"),
                "{route:?} {date:?}: {ops:?}"
            );
        }
    }
}

#[tokio::test]
async fn bodies_over_1_mib_are_413_and_non_json_is_400() {
    let h = Harness::start().await;
    let alice = user_token("alice");
    assert_eq!(h.register(&alice, "edge-1").await.0, 201);
    // just over 1 MiB of otherwise valid JSON
    let padding = "x".repeat(1024 * 1024);
    let big = json!({"eventType": "request", "metrics": {"errorMessage": padding}}).to_string();
    let req = Req::new("POST", "/proxy/metrics/{proxyId}/record")
        .param("proxyId", "edge-1")
        .bearer(&alice)
        .raw(&big)
        .build();
    let (status, body, _) = parts(handlers::record_metrics(&h.app, req).await);
    assert_error(status, &body, 413, "PAYLOAD_TOO_LARGE");
    let big = json!({"proxyId": "edge-2", "name": padding}).to_string();
    let req = Req::new("POST", "/proxies")
        .bearer(&alice)
        .raw(&big)
        .build();
    let (status, body, _) = parts(handlers::register_proxy(&h.app, req).await);
    assert_error(status, &body, 413, "PAYLOAD_TOO_LARGE");

    // wrong Content-Type, or not JSON, or empty: 400 on both write routes
    let event = json!({"eventType": "request"}).to_string();
    let cases: [(&str, &str); 7] = [
        ("text/plain", event.as_str()),
        ("application/x-www-form-urlencoded", "eventType=request"),
        ("multipart/form-data; boundary=x", event.as_str()),
        ("application/json", "{\"eventType\": \"request\""),
        ("application/json", "[1, 2, 3]"),
        ("application/json", "\"request\""),
        ("application/json", ""),
    ];
    for (content_type, body) in cases {
        let req = Req::new("POST", "/proxy/metrics/{proxyId}/record")
            .param("proxyId", "edge-1")
            .bearer(&alice)
            .raw(body)
            .header("content-type", content_type)
            .build();
        let (status, resp, _) = parts(handlers::record_metrics(&h.app, req).await);
        assert_error(status, &resp, 400, "INVALID_REQUEST");
        let req = Req::new("POST", "/proxies")
            .bearer(&alice)
            .raw(
                &body
                    .replace("eventType", "proxyId")
                    .replace("request", "edge-9"),
            )
            .header("content-type", content_type)
            .build();
        let (status, resp, _) = parts(handlers::register_proxy(&h.app, req).await);
        assert_error(status, &resp, 400, "INVALID_REQUEST");
    }
    // a JSON-suffixed media type with parameters is JSON
    let req = Req::new("POST", "/proxy/metrics/{proxyId}/record")
        .param("proxyId", "edge-1")
        .bearer(&alice)
        .raw(&event)
        .header("content-type", "Application/JSON; charset=utf-8")
        .build();
    assert_eq!(parts(handlers::record_metrics(&h.app, req).await).0, 201);
}

/// Percent-encodes everything but RFC 3986 unreserved characters, as a
/// client must for a path segment.
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The API Gateway (HTTP API, payload v2) event for `method route`: the raw
/// path percent-encoded, the path parameters decoded (as the gateway hands
/// them over), and the body base64-encoded when `base64` is set (as the
/// gateway does for binary media types).
fn gateway_event(
    method: &str,
    route: &str,
    params: &[(&str, &str)],
    query: &[(&str, &str)],
    token: &str,
    body: Option<(&[u8], bool)>,
) -> Request {
    let mut path = route.to_string();
    let mut path_params = json!({});
    for (name, value) in params {
        path = path.replace(&format!("{{{name}}}"), &percent_encode(value));
        path_params[*name] = json!(value);
    }
    let raw_query: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect();
    let query_params: serde_json::Map<String, Value> = query
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let (body, base64) = match body {
        Some((bytes, true)) => (json!(b64(bytes, STANDARD, true)), true),
        Some((bytes, false)) => (json!(String::from_utf8_lossy(bytes)), false),
        None => (Value::Null, false),
    };
    let event = json!({
        "version": "2.0",
        "routeKey": format!("{method} {route}"),
        "rawPath": path,
        "rawQueryString": raw_query.join("&"),
        "headers": {"host": "api.example.com", "content-type": "application/json",
                    "authorization": format!("Bearer {token}")},
        "queryStringParameters": if query.is_empty() { Value::Null } else { Value::Object(query_params) },
        "pathParameters": path_params,
        "requestContext": {
            "accountId": "123456789012", "apiId": "api", "domainName": "api.example.com",
            "domainPrefix": "api",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "127.0.0.1", "userAgent": "test"},
            "requestId": "gateway-request-id", "routeKey": format!("{method} {route}"),
            "stage": "$default", "time": "15/Jan/2024:10:04:05 +0000", "timeEpoch": 1705313045000i64
        },
        "body": body,
        "isBase64Encoded": base64
    });
    lambda_http::request::from_str(&event.to_string()).expect("API Gateway v2 event")
}

/// A valid request for a proxy route, with any (hostile) proxy id and date.
fn hostile_request(route: Route, token: &str, proxy_id: &str, date: &str) -> Request {
    let event = json!({"eventType": "request"}).to_string();
    let p = [("proxyId", proxy_id)];
    match route {
        Route::Record => gateway_event(
            "POST",
            "/proxy/metrics/{proxyId}/record",
            &p,
            &[],
            token,
            Some((event.as_bytes(), false)),
        ),
        Route::Daily => gateway_event(
            "GET",
            "/proxy/metrics/{proxyId}/daily/{date}",
            &[("proxyId", proxy_id), ("date", date)],
            &[],
            token,
            None,
        ),
        Route::Range => gateway_event(
            "GET",
            "/proxy/metrics/{proxyId}/daily",
            &p,
            &[("startDate", date), ("endDate", date)],
            token,
            None,
        ),
        Route::Aggregation => gateway_event(
            "GET",
            "/proxy/metrics/{proxyId}/aggregation",
            &p,
            &[("periodStart", date), ("periodEnd", date)],
            token,
            None,
        ),
        _ => gateway_event(
            "GET",
            "/proxy/metrics/{proxyId}/summary",
            &p,
            &[],
            token,
            None,
        ),
    }
}

#[tokio::test]
async fn base64_encoded_bodies_reach_the_handlers_decoded() {
    let h = Harness::start().await;
    let alice = user_token("alice");
    let register = json!({"proxyId": "edge-b64", "name": "binary ✓"}).to_string();
    let body = Some((register.as_bytes(), true));
    let req = gateway_event("POST", "/proxies", &[], &[], &alice, body);
    let (status, body, _) = parts(handlers::register_proxy(&h.app, req).await);
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["proxy"]["name"], "binary ✓");

    let event = json!({"eventType": "request", "eventId": "b64-1",
                       "metrics": {"requestCount": 3, "successCount": 3}})
    .to_string();
    let req = gateway_event(
        "POST",
        "/proxy/metrics/{proxyId}/record",
        &[("proxyId", "edge-b64")],
        &[],
        &alice,
        Some((event.as_bytes(), true)),
    );
    let (status, body, _) = parts(handlers::record_metrics(&h.app, req).await);
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["eventId"], "b64-1");
    let (_, body) = h.daily(&alice, "edge-b64", &today()).await;
    assert_eq!(body["metrics"]["requestCount"], 3);

    // bytes that are not UTF-8 JSON are still a 400
    let req = gateway_event(
        "POST",
        "/proxy/metrics/{proxyId}/record",
        &[("proxyId", "edge-b64")],
        &[],
        &alice,
        Some((&[0xff, 0xfe, 0x00, 0x7b], true)),
    );
    let (status, body, _) = parts(handlers::record_metrics(&h.app, req).await);
    assert_error(status, &body, 400, "INVALID_REQUEST");
}

#[tokio::test]
async fn a_500_carries_the_request_id_and_no_internals() {
    // A table that does not exist: the store answers ResourceNotFoundException,
    // which is not retryable, so the handler fails with an internal error.
    let h = Harness::start_with(&[("TABLE_NAME", "missing-table-xyz")]).await;
    let alice = user_token("alice");
    for route in [Route::List, Route::Register, Route::Daily] {
        let (status, body) = call(&h.app, route, &alice, "edge-1").await;
        assert_error(status, &body, 500, "INTERNAL_SERVER_ERROR");
        assert_eq!(body["requestId"], "test-request-id", "{body}");
        let text = body.to_string();
        for leak in [
            "missing-table-xyz",
            "ResourceNotFound",
            "GetItem",
            "Query",
            "dynamo",
            "Dynamo",
            "SdkError",
        ] {
            assert!(!text.contains(leak), "{leak} leaked: {text}");
        }
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(
            keys.len(),
            4,
            "error, message, code, requestId only: {body}"
        );
    }
}
