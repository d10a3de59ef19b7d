//! Each format's route and upstream, as the agent sends them (contract v3
//! `dimensions`), and the status each observation carries.

use super::*;
use crate::agent::nginx_format::{LatencyFrom, NginxFormat};

fn dims(format: &Format, line: &str) -> (Option<String>, Option<String>, Option<u16>) {
    let o = parse_line(format, line)
        .unwrap()
        .unwrap()
        .to_observation_with(&RouteRules::default());
    (o.route, o.upstream, o.status)
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

fn log_format(f: &str) -> Format {
    Format::NginxLogFormat(Box::new(
        NginxFormat::compile(f, LatencyFrom::Request).unwrap(),
    ))
}

#[test]
fn nginx_combined_and_main_routes_from_the_request_line() {
    let line = r#"203.0.113.7 - - [15/Jan/2024:11:04:05 +0100] "GET /api/users/42?expand=1 HTTP/1.1" 404 5 "-" "curl/8.5.0" 0.012"#;
    assert_eq!(
        dims(&Format::Nginx, line),
        (s("/api/users/:id"), None, Some(404))
    );
    let main = log_format("main");
    let line = r#"10.0.0.9 - - [15/Jan/2024:11:04:05 +0100] "POST /static/x.css HTTP/2.0" 200 0 "-" "ua" "-""#;
    assert_eq!(dims(&main, line), (s("/static/x.css"), None, Some(200)));
    // a request line nginx could not read: counted, with no route
    let line = r#"192.0.2.9 - - [15/Jan/2024:10:04:05 +0000] "-" 400 0 "-" "-" "-""#;
    assert_eq!(dims(&main, line), (None, None, Some(400)));
    let line =
        r#"192.0.2.9 - - [15/Jan/2024:10:04:05 +0000] "\x16\x03\x01\x00" 400 157 "-" "-" 0.001"#;
    assert_eq!(dims(&Format::Nginx, line), (None, None, Some(400)));
}

#[test]
fn nginx_upstream_addr_the_last_one_tried() {
    let f = log_format(
        r#"$remote_addr "$request" $status $body_bytes_sent ua="$upstream_addr" rt=$request_time"#,
    );
    let line =
        r#"127.0.0.1 "GET /a/1 HTTP/1.1" 502 0 ua="10.0.0.1:80, 10.0.0.2:80 : 10.0.1.1:80" rt=0.1"#;
    assert_eq!(dims(&f, line), (s("/a/:id"), s("10.0.1.1:80"), Some(502)));
    // served by nginx itself: no upstream
    let line = r#"127.0.0.1 "GET /health HTTP/1.1" 200 2 ua="-" rt=0.000"#;
    assert_eq!(dims(&f, line), (s("/health"), None, Some(200)));
    // unquoted, at the end of the line
    let f = log_format(r#"$status "$request" $upstream_addr"#);
    let line = r#"200 "GET /x HTTP/1.1" 10.0.0.1:80, 10.0.0.2:80"#;
    assert_eq!(dims(&f, line), (s("/x"), s("10.0.0.2:80"), Some(200)));
    // $request_uri when the format has no $request
    let f = log_format(r#"$status $request_uri"#);
    assert_eq!(dims(&f, "200 /u/7?x=1"), (s("/u/:id"), None, Some(200)));
}

#[test]
fn ingress_nginx_names_the_upstream_service() {
    let f = log_format("ingress-nginx");
    let line = r#"192.168.1.10 - - [15/Jan/2024:10:04:05 +0000] "GET /api/orders/3f2504e0-4f89-11d3-9a0c-0305e82c3301 HTTP/1.1" 504 160 "-" "Go-http-client/1.1" 112 5.003 [default-api-80] [] 10.244.0.5:8080, 10.244.0.6:8080 0, 160 5.001, 0.002 504, 504 7c3f2a"#;
    assert_eq!(
        dims(&f, line),
        (s("/api/orders/:id"), s("default-api-80"), Some(504))
    );
}

#[test]
fn envoy_json_route_name_else_path_and_upstream_host() {
    let named = r#"{"start_time":"2024-01-15T10:04:05.123Z","method":"GET","path":"/api/users/42","protocol":"HTTP/1.1","response_code":200,"response_flags":"-","bytes_received":0,"bytes_sent":10,"duration":3,"route_name":"users_route","upstream_host":"10.1.2.3:8080"}"#;
    assert_eq!(
        dims(&Format::Envoy, named),
        (s("users_route"), s("10.1.2.3:8080"), Some(200))
    );
    let unnamed = r#"{"start_time":"2024-01-15T10:04:05.123Z","path":"/api/users/42?x=1","response_code":"503","response_flags":"UF","bytes_received":"0","bytes_sent":"91","duration":"12","route_name":"-","upstream_host":null}"#;
    assert_eq!(
        dims(&Format::Envoy, unnamed),
        (s("/api/users/:id"), None, Some(503))
    );
}

#[test]
fn envoy_and_istio_text_upstream_host() {
    let default = r#"[2024-01-15T10:04:05.123Z] "GET /api/users/42 HTTP/1.1" 200 - 0 10 3 2 "-" "curl/8.5.0" "5f1c4d" "example.com" "10.1.2.3:8080""#;
    assert_eq!(
        dims(&Format::Envoy, default),
        (s("/api/users/:id"), s("10.1.2.3:8080"), Some(200))
    );
    let istio = r#"[2024-01-15T10:04:05.123Z] "GET /productpage HTTP/1.1" 503 UF,URX via_upstream - "delayed_connect_error:_111" 0 91 12 - "-" "curl/8.5.0" "5f1c4d" "productpage:9080" "10.244.0.7:9080" outbound|9080||productpage.default.svc.cluster.local 10.244.0.6:43210 10.96.0.10:9080 10.244.0.6:43208 - default"#;
    assert_eq!(
        dims(&Format::Envoy, istio),
        (s("/productpage"), s("10.244.0.7:9080"), Some(503))
    );
    // a line cut after the duration: no upstream, still a request
    let short = r#"[2024-01-15T10:04:05.123Z] "GET /x HTTP/1.1" 200 - 0 10 3"#;
    assert_eq!(dims(&Format::Envoy, short), (s("/x"), None, Some(200)));
}

#[test]
fn caddy_and_json_logs_route_from_the_uri() {
    let caddy = r#"{"level":"info","ts":1705313045.5,"request":{"method":"GET","uri":"/api/users/42?x=1"},"bytes_read":0,"duration":0.001,"size":5,"status":200}"#;
    assert_eq!(
        dims(&Format::Json(JsonMapping::caddy()), caddy),
        (s("/api/users/:id"), None, Some(200))
    );
    let nginx_json = r#"{"time":"2024-01-15T10:04:05+00:00","status":"502","request_uri":"/b/0123456789abcdef0123","upstream_addr":"10.0.0.1:80, 10.0.0.2:80"}"#;
    assert_eq!(
        dims(&Format::Json(JsonMapping::default()), nginx_json),
        (s("/b/:id"), s("10.0.0.2:80"), Some(502))
    );
    // the field may hold the whole request line
    let m = JsonMapping {
        route_field: Some("request".into()),
        ..JsonMapping::default()
    };
    let line = r#"{"status":200,"request":"GET /c/9 HTTP/1.1"}"#;
    assert_eq!(dims(&Format::Json(m), line), (s("/c/:id"), None, Some(200)));
}

#[test]
fn without_dimensions_the_observation_has_status_only() {
    let line =
        r#"10.0.0.1 - - [15/Jan/2024:10:04:05 +0000] "GET /a/1 HTTP/1.1" 502 552 "-" "curl/8" -"#;
    let o = parse_line(&Format::Nginx, line)
        .unwrap()
        .unwrap()
        .to_observation();
    assert_eq!((o.route, o.upstream, o.status), (None, None, Some(502)));
}
