//! `GET /dashboard` and `GET /dashboard/{asset+}`: the dashboard page
//! (`shared/assets/dashboard/`), embedded in the binary as it is — no build
//! step, no CDN. Served without a token: the page holds no data; in the
//! browser it asks for a token and reads the JSON endpoints with it.

use lambda_http::{Body, Request, RequestExt, Response, http::StatusCode};

use crate::error::ApiError;
use crate::http::{header, request_id};

/// The policy the page is written for (`shared/assets/dashboard/README.md`).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// One embedded file of the page.
#[derive(Debug, Clone, Copy)]
pub struct DashboardAsset {
    /// The path under `/dashboard/` (`""` is the page itself, `/dashboard`).
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
    /// A strong validator of `body`, computed at compile time.
    etag: u64,
}

const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

macro_rules! asset {
    ($path:literal, $file:literal, $content_type:literal) => {
        DashboardAsset {
            path: $path,
            content_type: $content_type,
            body: include_str!(concat!("../../assets/dashboard/", $file)),
            etag: fnv1a(include_bytes!(concat!("../../assets/dashboard/", $file))),
        }
    };
}

/// Every URL the page uses, and nothing else (the README and the licence
/// stay unserved).
pub const DASHBOARD_ASSETS: [DashboardAsset; 7] = [
    asset!("", "index.html", "text/html; charset=utf-8"),
    asset!("alerts.js", "alerts.js", "text/javascript; charset=utf-8"),
    asset!(
        "incident.js",
        "incident.js",
        "text/javascript; charset=utf-8"
    ),
    asset!("app.js", "app.js", "text/javascript; charset=utf-8"),
    asset!("style.css", "style.css", "text/css; charset=utf-8"),
    asset!(
        "vendor/uPlot.iife.min.js",
        "vendor/uPlot.iife.min.js",
        "text/javascript; charset=utf-8"
    ),
    asset!(
        "vendor/uPlot.min.css",
        "vendor/uPlot.min.css",
        "text/css; charset=utf-8"
    ),
];

impl DashboardAsset {
    fn etag(&self) -> String {
        format!("\"{:016x}\"", self.etag)
    }

    fn is_page(&self) -> bool {
        self.path.is_empty()
    }
}

/// Whether an `If-None-Match` value names `etag` (or is `*`).
fn matches_etag(if_none_match: &str, etag: &str) -> bool {
    if_none_match.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

/// `GET /dashboard` → the page; `GET /dashboard/{asset+}` → one of its
/// files, or the contract's 404 body for any other path.
pub fn get_dashboard(request: Request) -> Response<Body> {
    let wanted = request
        .path_parameters_ref()
        .and_then(|p| p.first("asset"))
        .unwrap_or("");
    let Some(asset) = DASHBOARD_ASSETS.iter().find(|a| a.path == wanted) else {
        return ApiError::NotFound("There is no dashboard file at this path.".into())
            .into_response(request_id(&request).as_deref());
    };
    let etag = asset.etag();
    let not_modified = header(&request, "if-none-match")
        .ok()
        .flatten()
        .is_some_and(|v| matches_etag(&v, &etag));
    let mut builder = Response::builder()
        .header("content-type", asset.content_type)
        // The URLs carry no version (no build step): browsers revalidate
        // every time and get a 304 while the file is unchanged.
        .header("cache-control", "no-cache")
        .header("etag", &etag)
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer");
    if asset.is_page() {
        builder = builder.header("content-security-policy", CONTENT_SECURITY_POLICY);
    }
    let response = if not_modified {
        builder.status(StatusCode::NOT_MODIFIED).body(Body::Empty)
    } else {
        builder
            .status(StatusCode::OK)
            .body(Body::Text(asset.body.to_string()))
    };
    response.unwrap_or_else(|e| {
        ApiError::Internal(format!("building response: {e}"))
            .into_response(request_id(&request).as_deref())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_differ_per_file_and_match_if_none_match_forms() {
        let tags: std::collections::BTreeSet<String> =
            DASHBOARD_ASSETS.iter().map(DashboardAsset::etag).collect();
        assert_eq!(tags.len(), DASHBOARD_ASSETS.len());
        let tag = DASHBOARD_ASSETS[0].etag();
        assert!(matches_etag(&tag, &tag));
        assert!(matches_etag(&format!("\"x\", W/{tag}"), &tag));
        assert!(matches_etag("*", &tag));
        assert!(!matches_etag("\"other\"", &tag));
    }

    #[test]
    fn the_page_refers_to_exactly_the_served_files() {
        let page = DASHBOARD_ASSETS[0].body;
        for asset in &DASHBOARD_ASSETS[1..] {
            assert!(
                page.contains(&format!("\"/dashboard/{}\"", asset.path)),
                "{}",
                asset.path
            );
        }
        assert_eq!(
            page.matches("\"/dashboard/").count(),
            DASHBOARD_ASSETS.len() - 1
        );
    }
}
