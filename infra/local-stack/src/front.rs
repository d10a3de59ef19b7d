//! The local stack's front door, where API Gateway would be: it answers a
//! path or method outside the API's routes itself — `404` with the
//! contract's error body, at once — and hands everything else to
//! `cargo lambda watch` unchanged. The watcher alone never answers an
//! unknown route (the request waits for a function that does not exist, for
//! minutes), where API Gateway answers 404 at once.
//!
//! The route table is read from the one place the watcher reads it,
//! `[workspace.metadata.lambda.watch.router]` in the root `Cargo.toml`, and
//! matched with the watcher's own router (matchit 0.8: `{name}`, `{*rest}`),
//! so a route added there is served here with no second list to keep.

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::Response;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The watcher's own APIs, not API Gateway routes: the Lambda invoke API
/// (aggregation by hand, tests) and the runtime API the functions poll.
const WATCHER_PREFIXES: &[&str] = &["/2015-03-31/functions/", "/.rt/"];

/// Characters of a refused path shown in the 404 message.
const SHOWN_PATH_CHARS: usize = 128;

/// The API's routes: path template → methods.
pub struct Routes {
    router: matchit::Router<Vec<String>>,
    count: usize,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("count", &self.count)
            .finish()
    }
}

impl Routes {
    /// The router table of the workspace's `Cargo.toml`.
    pub fn from_cargo_toml(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The `[workspace.metadata.lambda.watch.router]` table of a manifest.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let manifest: toml::Table = text.parse().map_err(|e| format!("not TOML: {e}"))?;
        let table = ["workspace", "metadata", "lambda", "watch", "router"]
            .iter()
            .try_fold(&manifest, |table, key| table.get(*key)?.as_table())
            .ok_or("no [workspace.metadata.lambda.watch.router] table")?;
        let mut router = matchit::Router::new();
        let mut count = 0;
        for (path, entries) in table {
            let methods = entries
                .as_array()
                .ok_or_else(|| format!("route {path}: expected an array of {{method, function}}"))?
                .iter()
                .map(|entry| {
                    entry
                        .get("method")
                        .and_then(|m| m.as_str())
                        .map(str::to_ascii_uppercase)
                        .ok_or_else(|| format!("route {path}: an entry without a method"))
                })
                .collect::<Result<Vec<String>, String>>()?;
            count += methods.len();
            router
                .insert(path.as_str(), methods)
                .map_err(|e| format!("route {path}: {e}"))?;
        }
        Ok(Self { router, count })
    }

    /// How many (path, method) pairs the table holds.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether API Gateway would hand `method path` to a function.
    pub fn allows(&self, method: &str, path: &str) -> bool {
        self.router
            .at(path)
            .is_ok_and(|found| found.value.iter().any(|m| m == method))
    }
}

struct Front {
    routes: Routes,
    upstream_port: u16,
    client: Client<HttpConnector, Body>,
}

/// Serves the front door on `listener`, handing known routes (and the
/// watcher's own APIs) to the watcher on `127.0.0.1:upstream_port`.
pub fn spawn(
    listener: tokio::net::TcpListener,
    routes: Routes,
    upstream_port: u16,
) -> tokio::task::JoinHandle<()> {
    let front = Arc::new(Front {
        routes,
        upstream_port,
        client: Client::builder(TokioExecutor::new()).build_http(),
    });
    let app = axum::Router::new().fallback(forward).with_state(front);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("local-stack: the API front stopped: {e}");
        }
    })
}

async fn forward(State(front): State<Arc<Front>>, mut request: Request) -> Response {
    let path = request.uri().path().to_string();
    let method = request.method().as_str().to_string();
    let known =
        WATCHER_PREFIXES.iter().any(|p| path.starts_with(p)) || front.routes.allows(&method, &path);
    if !known {
        return not_found(&method, &path);
    }
    // A header value that is not visible ASCII: the watcher fails on it with
    // its own 500 before any function runs; API Gateway refuses it itself.
    if request.headers().values().any(|v| v.to_str().is_err()) {
        return json_response(
            StatusCode::BAD_REQUEST,
            serde_json::json!({
                "error": "INVALID_REQUEST",
                "message": "A header value holds characters other than visible ASCII.",
                "code": "PROXY_METRICS_400",
            }),
        );
    }
    respell_compressed_text(request.headers_mut());
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    match format!("http://127.0.0.1:{}{target}", front.upstream_port).parse::<Uri>() {
        Ok(uri) => *request.uri_mut() = uri,
        Err(_) => return not_found(&method, &path),
    }
    match front.client.request(request).await {
        Ok(response) => response.map(Body::new),
        Err(e) => json_response(
            StatusCode::BAD_GATEWAY,
            serde_json::json!({
                "error": "BAD_GATEWAY",
                "message": format!("The local watcher did not answer: {e}"),
                "code": "PROXY_METRICS_502",
            }),
        ),
    }
}

/// A compressed body declared as text (an OTLP/JSON export with
/// `Content-Encoding: gzip`) is bytes, not text: API Gateway hands it to the
/// function base64-encoded, but the watcher (cargo-lambda 1.9.2) reads every
/// body whose `Content-Type` starts with `text/` or `application/json` as
/// UTF-8 and fails with its own 500 before any function runs. Media types
/// are case-insensitive (RFC 9110), so the type is re-spelt in upper case:
/// the same type for the function, binary for the watcher's case-sensitive
/// test, which then base64-encodes the body as API Gateway does.
fn respell_compressed_text(headers: &mut axum::http::HeaderMap) {
    let compressed = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|e| !e.trim().is_empty() && !e.trim().eq_ignore_ascii_case("identity"));
    let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return;
    };
    if compressed
        && (content_type.starts_with("text/") || content_type.starts_with("application/json"))
        && let Ok(upper) = HeaderValue::from_str(&content_type.to_ascii_uppercase())
    {
        headers.insert(header::CONTENT_TYPE, upper);
    }
}

/// What API Gateway answers for a route it does not have, in the
/// contract's error shape.
fn not_found(method: &str, path: &str) -> Response {
    let shown: String = path.chars().take(SHOWN_PATH_CHARS).collect();
    json_response(
        StatusCode::NOT_FOUND,
        serde_json::json!({
            "error": "NOT_FOUND",
            "message": format!("No route {method} {shown}: the API has no such path and method."),
            "code": "PROXY_METRICS_404",
        }),
    )
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compressed_json_body_is_marked_binary_for_the_watcher() {
        let headers = |ct: &str, ce: Option<&str>| {
            let mut h = axum::http::HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            if let Some(ce) = ce {
                h.insert(header::CONTENT_ENCODING, HeaderValue::from_str(ce).unwrap());
            }
            respell_compressed_text(&mut h);
            h[header::CONTENT_TYPE].to_str().unwrap().to_string()
        };
        assert_eq!(
            headers("application/json", Some("gzip")),
            "APPLICATION/JSON"
        );
        assert_eq!(headers("application/json", None), "application/json");
        assert_eq!(
            headers("application/json", Some("identity")),
            "application/json"
        );
        assert_eq!(
            headers("application/x-protobuf", Some("gzip")),
            "application/x-protobuf"
        );
    }

    #[test]
    fn the_workspace_routes_are_read_and_matched_like_the_watcher() {
        let routes = Routes::from_cargo_toml(&crate::workspace_root().join("Cargo.toml")).unwrap();
        assert!(routes.len() >= 10, "{}", routes.len());
        for (method, path) in [
            ("POST", "/proxies"),
            ("GET", "/proxies"),
            ("POST", "/proxy/metrics/edge-1/record"),
            ("GET", "/proxy/metrics/edge-1/daily/2024-01-15"),
            ("GET", "/proxy/metrics/edge-1/daily"),
            ("GET", "/metrics"),
            ("GET", "/dashboard/app.js"),
        ] {
            assert!(routes.allows(method, path), "{method} {path}");
        }
        for (method, path) in [
            ("GET", "/proxy/metrics"),
            ("DELETE", "/proxies"),
            ("TRACE", "/proxies"),
            ("HEAD", "/proxies"),
            ("OPTIONS", "/metrics"),
            ("GET", "/proxy/metrics/edge-1/record"),
            ("GET", "/proxies/"),
            ("GET", "/"),
        ] {
            assert!(!routes.allows(method, path), "{method} {path}");
        }
    }

    #[test]
    fn a_table_the_watcher_could_not_read_is_refused() {
        assert!(Routes::from_toml("[workspace]").is_err());
        let bad = "[workspace.metadata.lambda.watch.router]\n\"/a\" = [{ function = \"f\" }]";
        assert!(
            Routes::from_toml(bad)
                .unwrap_err()
                .contains("without a method")
        );
    }
}
