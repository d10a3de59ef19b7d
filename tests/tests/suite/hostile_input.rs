//! Hostile input through the handlers: path parameters, bodies over 1 MiB,
//! non-JSON, API Gateway's base64 bodies, and 500s that reveal nothing.

use crate::common;

use common::auth::*;
use common::*;
use lambda_http::Request;
use proxy_metrics::handlers;
use serde_json::{Value, json};

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
    let (status, body, _) = send_record(&h.app, record_req(&alice, "edge-1").raw(&big)).await;
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
        let req = record_req(&alice, "edge-1")
            .raw(body)
            .header("content-type", content_type);
        let (status, resp, _) = send_record(&h.app, req).await;
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
    let req = record_req(&alice, "edge-1")
        .raw(&event)
        .header("content-type", "Application/JSON; charset=utf-8");
    assert_eq!(send_record(&h.app, req).await.0, 201);
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
        Route::Series => gateway_event(
            "GET",
            "/proxy/metrics/{proxyId}/series",
            &p,
            &[
                ("from", "2024-01-15T00:00:00Z"),
                ("to", "2024-01-15T01:00:00Z"),
                ("step", "5m"),
            ],
            token,
            None,
        ),
        Route::Breakdown => gateway_event(
            "GET",
            "/proxy/metrics/{proxyId}/breakdown",
            &p,
            &[("by", "route"), ("startDate", date), ("endDate", date)],
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
