//! Test harness: dynoxide embedded on an ephemeral port holding the table of
//! `infra/template.yaml`, the real `aws-sdk-dynamodb` client pointed at it, and
//! API Gateway v2-shaped requests for the handlers.
#![allow(dead_code)]

pub mod auth;
pub mod fault_proxy;
pub mod fold;
pub mod otlp;
pub mod record;
pub mod stack;

use std::collections::HashMap;

use std::sync::OnceLock;

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use chrono::{DateTime, Duration, NaiveDate, NaiveTime, SecondsFormat, Utc};
use lambda_http::{Body, Request, Response};
use proxy_metrics::App;
use proxy_metrics::app::Config;
use proxy_metrics::clock::Clock;
use serde_json::{Value, json};

pub const SECRET: &str = "test-secret-0123456789abcdef";
pub const TABLE: &str = "proxy-metrics-test";

/// The variable that runs the in-process suite as if it were another time:
/// `HH:MM` (today, UTC, at that time of day) or a full RFC 3339 instant.
pub const TEST_NOW_VARIABLE: &str = "PROXY_METRICS_TEST_NOW";

/// The instant handler tests run at unless they pin their own: the real time
/// when the test binary started, or [`TEST_NOW_VARIABLE`]. Every timestamp a
/// test builds is relative to it, never "today at hour H" of the wall clock.
pub fn now() -> DateTime<Utc> {
    static NOW: OnceLock<DateTime<Utc>> = OnceLock::new();
    *NOW.get_or_init(|| {
        #[allow(clippy::disallowed_methods)] // the default pinned instant is the real one
        let real = Utc::now();
        match std::env::var(TEST_NOW_VARIABLE) {
            Ok(v) if !v.trim().is_empty() => parse_test_now(v.trim(), real).unwrap_or_else(|| {
                panic!(
                    "{TEST_NOW_VARIABLE}={v:?}: expected HH:MM[:SS] (UTC) or an RFC 3339 instant"
                )
            }),
            _ => real,
        }
    })
}

/// `HH:MM[:SS]` on the real day, or an RFC 3339 instant.
pub fn parse_test_now(value: &str, real: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(value) {
        return Some(at.with_timezone(&Utc));
    }
    let time = NaiveTime::parse_from_str(value, "%H:%M:%S%.f")
        .or_else(|_| NaiveTime::parse_from_str(value, "%H:%M"))
        .ok()?;
    Some(real.date_naive().and_time(time).and_utc())
}

/// The instant `at` as the API writes it.
pub fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn day_str(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

/// The UTC day `ago` days before [`now`].
pub fn day_ago(ago: i64) -> NaiveDate {
    (now() - Duration::days(ago)).date_naive()
}

/// The `i`-th of `n` instants spread over the part of `day` that the API
/// accepts events for at `now` (not before the 7-day late window, not after
/// `now`): whatever the hour, they all land on `day`.
pub fn instant_on(day: NaiveDate, i: usize, n: usize, now: DateTime<Utc>) -> DateTime<Utc> {
    let day_start = day.and_time(NaiveTime::MIN).and_utc();
    let from = day_start.max(now - Duration::days(7) + Duration::minutes(1));
    let to = (day_start + Duration::days(1) - Duration::milliseconds(1)).min(now);
    assert!(from <= to, "{day} has no instant the API accepts at {now}");
    let span = (to - from).num_milliseconds();
    from + Duration::milliseconds(span * i as i64 / n.max(1) as i64)
}

pub struct Harness {
    pub app: App,
    pub client: aws_sdk_dynamodb::Client,
    pub endpoint: String,
    /// The embedded store, unless the harness uses another endpoint.
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.abort();
        }
    }
}

pub fn config(endpoint: &str, extra: &[(&str, &str)]) -> Config {
    let mut vars: HashMap<String, String> = HashMap::from([
        ("TABLE_NAME".into(), TABLE.into()),
        ("JWT_SECRET".into(), SECRET.into()),
        ("DYNAMODB_ENDPOINT".into(), endpoint.into()),
        // The pinned clock never refills a bucket: tests that are not about
        // the per-proxy and per-caller limits set them out of reach
        // (hardening.rs and limits.rs test them).
        ("RECORD_RATE_PER_PROXY".into(), "1000000".into()),
        ("RECORD_BURST_PER_PROXY".into(), "1000000".into()),
        ("REQUEST_RATE_PER_CALLER".into(), "1000000".into()),
        ("REQUEST_BURST_PER_CALLER".into(), "1000000".into()),
    ]);
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    Config::from_map(&vars).expect("test config")
}

pub fn sdk_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}

impl Harness {
    /// A harness whose clock is pinned at [`now`].
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// A harness whose clock is pinned at `at`.
    pub async fn start_at(at: DateTime<Utc>) -> Self {
        Self::start_with_at(&[], at).await
    }

    pub async fn start_with(extra: &[(&str, &str)]) -> Self {
        Self::start_with_at(extra, now()).await
    }

    pub async fn start_with_at(extra: &[(&str, &str)], at: DateTime<Utc>) -> Self {
        let db = local_stack::memory_database(TABLE).expect("table from template");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let server = local_stack::spawn_server(listener, db);
        let client = sdk_client(&endpoint);
        let app = App::with_clock(&config(&endpoint, extra), client.clone(), Clock::pinned(at));
        Self {
            app,
            client,
            endpoint,
            server: Some(server),
        }
    }

    /// A harness on a store served elsewhere (its table already created),
    /// clock pinned at [`now`].
    pub async fn start_with_endpoint(endpoint: &str) -> Self {
        let client = sdk_client(endpoint);
        let app = App::with_clock(&config(endpoint, &[]), client.clone(), Clock::pinned(now()));
        Self {
            app,
            client,
            endpoint: endpoint.to_string(),
            server: None,
        }
    }
}

/// An HS256 token for `sub` issued at [`now`], extra claims merged in (`exp` defaults to +1 h).
pub fn token(sub: &str, extra: Value) -> String {
    token_at(sub, extra, now())
}

/// An HS256 token for `sub` issued at `at` (for a harness pinned there).
pub fn token_at(sub: &str, extra: Value, at: DateTime<Utc>) -> String {
    let now = at.timestamp();
    let mut claims = json!({"sub": sub, "exp": now + 3600, "iat": now});
    if let (Value::Object(c), Value::Object(e)) = (&mut claims, extra) {
        c.extend(e);
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

pub fn user_token(sub: &str) -> String {
    token(sub, json!({"tier": "pro"}))
}

/// Builds the request API Gateway (HTTP API, payload v2) hands a Lambda.
pub struct Req {
    method: &'static str,
    route: &'static str,
    path: String,
    path_params: Value,
    query: Value,
    headers: Value,
    body: Option<String>,
    /// The body is base64 (as API Gateway hands a binary body over).
    base64: bool,
}

impl Req {
    pub fn new(method: &'static str, route: &'static str) -> Self {
        Self {
            method,
            route,
            path: route.to_string(),
            path_params: json!({}),
            query: json!({}),
            headers: json!({"host": "api.example.com"}),
            body: None,
            base64: false,
        }
    }

    pub fn param(mut self, name: &str, value: &str) -> Self {
        self.path_params[name] = json!(value);
        self.path = self.path.replace(&format!("{{{name}}}"), value);
        self
    }

    pub fn query(mut self, name: &str, value: &str) -> Self {
        self.query[name] = json!(value);
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers[name.to_ascii_lowercase()] = json!(value);
        self
    }

    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    pub fn json(self, body: Value) -> Self {
        self.raw(&body.to_string())
    }

    pub fn raw(mut self, body: &str) -> Self {
        self.body = Some(body.to_string());
        self.header("content-type", "application/json")
    }

    /// A binary body (protobuf, gzip) of `content_type`, base64-encoded the
    /// way API Gateway hands it to a Lambda.
    pub fn binary(mut self, body: &[u8], content_type: &str) -> Self {
        use base64::Engine;
        self.body = Some(base64::engine::general_purpose::STANDARD.encode(body));
        self.base64 = true;
        self.header("content-type", content_type)
    }

    pub fn build(self) -> Request {
        let query_string = self
            .query
            .as_object()
            .map(|q| {
                q.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join("&")
            })
            .unwrap_or_default();
        let event = json!({
            "version": "2.0",
            "routeKey": format!("{} {}", self.method, self.route),
            "rawPath": self.path,
            "rawQueryString": query_string,
            "headers": self.headers,
            "queryStringParameters": if query_string.is_empty() { Value::Null } else { self.query.clone() },
            "pathParameters": self.path_params,
            "requestContext": {
                "accountId": "123456789012", "apiId": "api", "domainName": "api.example.com",
                "domainPrefix": "api",
                "http": {"method": self.method, "path": self.path, "protocol": "HTTP/1.1",
                         "sourceIp": "127.0.0.1", "userAgent": "test"},
                "requestId": "test-request-id", "routeKey": format!("{} {}", self.method, self.route),
                "stage": "$default", "time": "15/Jan/2024:10:04:05 +0000", "timeEpoch": 1705313045000i64
            },
            "body": self.body,
            "isBase64Encoded": self.base64
        });
        lambda_http::request::from_str(&event.to_string()).expect("API Gateway v2 event")
    }
}

/// Status and parsed JSON body of a handler response.
pub fn parts(response: Response<Body>) -> (u16, Value, HashMap<String, String>) {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    let body = match response.body() {
        Body::Text(t) => serde_json::from_str(t).expect("JSON body"),
        Body::Binary(b) => serde_json::from_slice(b).expect("JSON body"),
        _ => Value::Null,
    };
    (status, body, headers)
}

/// Asserts the contract's error body.
pub fn assert_error(status: u16, body: &Value, expected_status: u16, kind: &str) {
    assert_eq!(status, expected_status, "body: {body}");
    assert_eq!(body["error"], kind, "body: {body}");
    assert_eq!(body["code"], format!("PROXY_METRICS_{expected_status}"));
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
}

impl Harness {
    /// Stores already-validated events for `proxy_id` straight through the
    /// store (no handler, no token), `per_call` events per call: how the
    /// benchmarks seed days.
    pub async fn store_events(
        &self,
        proxy_id: &str,
        tier: proxy_metrics::domain::tier::Tier,
        events: &[proxy_metrics::domain::event::Event],
        per_call: usize,
    ) {
        for chunk in events.chunks(per_call.max(1)) {
            let destination = proxy_metrics::storage::Destination {
                proxy_id,
                retention_days: tier.raw_retention_days(),
                marked_at_ms: None,
                dimension_pages: 1,
                dims_since_ms: None,
            };
            self.app
                .store
                .record_events(destination, chunk, self.app.clock.now())
                .await
                .expect("events stored");
        }
    }

    /// Sets when the proxy first sent a dimension (`dimsSince`), as if it
    /// had sent dimensions since `at` (benches of established proxies).
    #[allow(dead_code)]
    pub async fn set_dims_since(&self, proxy_id: &str, at: DateTime<Utc>) {
        self.client
            .update_item()
            .table_name(TABLE)
            .key(
                "pk",
                aws_sdk_dynamodb::types::AttributeValue::S(format!("PROXY#{proxy_id}")),
            )
            .key(
                "sk",
                aws_sdk_dynamodb::types::AttributeValue::S("PROXY".into()),
            )
            .update_expression("SET dimsSince = :at")
            .expression_attribute_values(
                ":at",
                aws_sdk_dynamodb::types::AttributeValue::N(at.timestamp_millis().to_string()),
            )
            .send()
            .await
            .expect("dimsSince set");
    }

    pub async fn register(&self, token: &str, proxy_id: &str) -> (u16, Value) {
        let req = Req::new("POST", "/proxies")
            .bearer(token)
            .json(json!({"proxyId": proxy_id, "name": format!("{proxy_id} name")}))
            .build();
        let (s, b, _) = parts(proxy_metrics::handlers::register_proxy(&self.app, req).await);
        (s, b)
    }

    pub async fn record(&self, token: &str, proxy_id: &str, body: Value) -> (u16, Value) {
        let (s, b, _) = send_record(&self.app, record_req(token, proxy_id).json(body)).await;
        (s, b)
    }

    pub async fn daily(&self, token: &str, proxy_id: &str, date: &str) -> (u16, Value) {
        let req = Req::new("GET", "/proxy/metrics/{proxyId}/daily/{date}")
            .param("proxyId", proxy_id)
            .param("date", date)
            .bearer(token)
            .build();
        let (s, b, _) = parts(proxy_metrics::handlers::get_daily_metrics(&self.app, req).await);
        (s, b)
    }
}

/// [`now`]'s day.
pub fn today() -> String {
    day_str(now().date_naive())
}

pub fn now_rfc3339() -> String {
    iso(now())
}

/// The one way tests build a record request (`POST
/// /proxy/metrics/{proxyId}/record`): add headers and a body, then
/// [`send_record`].
pub fn record_req(token: &str, proxy_id: &str) -> Req {
    Req::new("POST", "/proxy/metrics/{proxyId}/record")
        .param("proxyId", proxy_id)
        .bearer(token)
}

/// Sends a record request to any `App` (e.g. one whose client goes through
/// a fault proxy): status, body and headers of the handler's response.
pub async fn send_record(app: &App, req: Req) -> (u16, Value, HashMap<String, String>) {
    parts(proxy_metrics::handlers::record_metrics(app, req.build()).await)
}
