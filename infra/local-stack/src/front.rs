//! The local stack's front door, where API Gateway would be: it answers a
//! path or method outside the API's routes itself — `404` with the
//! contract's error body, at once — and hands everything else to
//! `cargo lambda watch` unchanged (but for the case of a compressed text
//! body's media type: [`binary_content_type`]). The watcher alone never answers an
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
    if let Some(binary) = binary_content_type(request.headers()) {
        request.headers_mut().insert(header::CONTENT_TYPE, binary);
    }
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

/// A compressed body (`Content-Encoding`, e.g. a gzip OTLP/JSON export) is
/// bytes, not text. The watcher decides how to pass a body by `Content-Type`
/// alone: `text/*` and `application/json…` are read as UTF-8, and a gzip
/// body is then the watcher's own 500 before any function runs (a valid
/// export lost). For such a request the same media type is handed on with
/// its first letter in capitals: media types are case-insensitive (RFC 9110,
/// 8.3.1), so the function reads the same type, while the watcher's
/// case-sensitive test sees a binary one and passes the body base64-encoded
/// (`isBase64Encoded`), which `lambda_http` decodes to the same bytes.
/// `None`: nothing to change.
fn binary_content_type(headers: &header::HeaderMap) -> Option<HeaderValue> {
    headers.get(header::CONTENT_ENCODING)?;
    let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let textual = content_type.starts_with("text/") || content_type.starts_with("application/json");
    if !textual {
        return None;
    }
    let mut chars = content_type.chars();
    let first = chars.next()?.to_ascii_uppercase();
    HeaderValue::from_str(&format!("{first}{}", chars.as_str())).ok()
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
    fn a_compressed_text_body_is_handed_on_as_binary() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = header::HeaderMap::new();
            for (k, v) in pairs {
                map.insert(*k, HeaderValue::from_static(v));
            }
            map
        };
        let gzip_json = headers(&[
            ("content-type", "application/json; charset=utf-8"),
            ("content-encoding", "gzip"),
        ]);
        assert_eq!(
            binary_content_type(&gzip_json).unwrap(),
            "Application/json; charset=utf-8"
        );
        let gzip_text = headers(&[("content-type", "text/plain"), ("content-encoding", "gzip")]);
        assert_eq!(binary_content_type(&gzip_text).unwrap(), "Text/plain");
        // already binary to the watcher, or not compressed: unchanged
        for unchanged in [
            headers(&[
                ("content-type", "application/x-protobuf"),
                ("content-encoding", "gzip"),
            ]),
            headers(&[("content-type", "application/json")]),
            headers(&[("content-encoding", "gzip")]),
        ] {
            assert_eq!(binary_content_type(&unchanged), None, "{unchanged:?}");
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
