//! The formats issue 24 found unreadable: nginx's stock `main` under
//! `--format nginx`, Istio's default Envoy text, Caddy's JSON log.

use super::*;

#[test]
fn the_stock_main_format_is_not_malformed_under_format_nginx() {
    let line = r#"172.17.0.1 - - [15/Jan/2024:10:04:05 +0000] "GET / HTTP/1.1" 200 615 "-" "curl/8.5.0" "-""#;
    let r = parse_line(&Format::Nginx, line).unwrap().unwrap();
    assert_eq!((r.status, r.bytes_sent, r.latency_ms), (200, 615, None));
}

#[test]
fn istio_default_text_format() {
    let line = r#"[2024-01-15T10:04:05.123Z] "GET /productpage HTTP/1.1" 503 UF,URX via_upstream - "delayed_connect_error:_111" 0 91 12 - "-" "curl/8.5.0" "5f1c4d" "productpage:9080" "10.244.0.7:9080" outbound|9080||productpage.default.svc.cluster.local 10.244.0.6:43210 10.96.0.10:9080 10.244.0.6:43208 - default"#;
    let r = parse_line(&Format::Envoy, line).unwrap().unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.flags.as_deref(), Some("UF,URX"));
    assert_eq!((r.bytes_received, r.bytes_sent), (0, 91));
    assert_eq!(r.latency_ms, Some(12.0));
    assert!(r.is_error());
}

#[test]
fn caddy_json_access_log() {
    let line = r#"{"level":"info","ts":1705313045.5,"logger":"http.log.access","msg":"handled request","request":{"remote_ip":"127.0.0.1","method":"GET","uri":"/"},"bytes_read":12,"user_id":"","duration":0.0125,"size":5120,"status":502,"resp_headers":{}}"#;
    let r = parse_line(&Format::Json(JsonMapping::caddy()), line)
        .unwrap()
        .unwrap();
    assert_eq!((r.status, r.bytes_sent, r.bytes_received), (502, 5120, 12));
    assert_eq!(r.latency_ms, Some(12.5));
    assert_eq!(r.time.unwrap().timestamp_millis(), 1_705_313_045_500);
}
