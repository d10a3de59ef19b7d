//! Lines as nginx, its Docker image and ingress-nginx write them.

use super::*;
use chrono::TimeZone;

fn main_format() -> NginxFormat {
    NginxFormat::compile("main", LatencyFrom::Request).unwrap()
}

#[test]
fn the_stock_main_format_parses() {
    let line = r#"172.17.0.1 - - [15/Jan/2024:10:04:05 +0000] "GET / HTTP/1.1" 200 615 "-" "curl/8.5.0" "-""#;
    let r = main_format().parse(line).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.bytes_sent, 615);
    assert_eq!(r.latency_ms, None);
    assert_eq!(
        r.time,
        Some(Utc.with_ymd_and_hms(2024, 1, 15, 10, 4, 5).unwrap())
    );
    // a forwarded-for list and a user agent with spaces and quotes escaped
    let line = r#"10.0.0.9 - bob [15/Jan/2024:11:04:05 +0100] "POST /api?q=a b HTTP/2.0" 502 0 "https://x/" "Mozilla/5.0 (X11; Linux) \x22q\x22" "203.0.113.7, 10.0.0.1""#;
    let r = main_format().parse(line).unwrap();
    assert_eq!((r.status, r.bytes_sent), (502, 0));
    assert!(r.is_error());
    assert_eq!(
        r.time,
        Some(Utc.with_ymd_and_hms(2024, 1, 15, 10, 4, 5).unwrap())
    );
}

#[test]
fn a_custom_format_as_written_in_nginx_conf() {
    let conf = r#"'$remote_addr [$time_iso8601] "$request" $status $bytes_sent '
                 'rt=$request_time urt="$upstream_response_time" rl=$request_length'"#;
    let f = NginxFormat::compile(conf, LatencyFrom::Request).unwrap();
    let line = r#"127.0.0.1 [2024-01-15T10:04:05+00:00] "GET /x HTTP/1.1" 503 1200 rt=0.250 urt="0.100, 0.120 : 0.010" rl=431"#;
    let r = f.parse(line).unwrap();
    assert_eq!((r.status, r.bytes_sent, r.bytes_received), (503, 1200, 431));
    // the request time, not the upstream's
    assert_eq!(r.latency_ms, Some(250.0));
    let f = NginxFormat::compile(conf, LatencyFrom::Upstream).unwrap();
    let ms = f.parse(line).unwrap().latency_ms.unwrap();
    assert!((ms - 230.0).abs() < 1e-9, "{ms}");
}

#[test]
fn ingress_nginx_upstreaminfo_with_retried_upstreams() {
    let f = NginxFormat::compile("ingress-nginx", LatencyFrom::Request).unwrap();
    let line = r#"192.168.1.10 - - [15/Jan/2024:10:04:05 +0000] "GET /api HTTP/1.1" 504 160 "-" "Go-http-client/1.1" 112 5.003 [default-api-80] [] 10.244.0.5:8080, 10.244.0.6:8080 0, 160 5.001, 0.002 504, 504 7c3f2a"#;
    let r = f.parse(line).unwrap();
    assert_eq!((r.status, r.bytes_sent, r.bytes_received), (504, 160, 112));
    assert_eq!(r.latency_ms, Some(5003.0));
    let f = NginxFormat::compile("ingress-nginx", LatencyFrom::Upstream).unwrap();
    let ms = f.parse(line).unwrap().latency_ms.unwrap();
    assert!((ms - 5003.0).abs() < 1e-6, "{ms}");
}

#[test]
fn lines_of_another_shape_are_malformed_not_guessed() {
    let f = main_format();
    assert!(f.parse("garbage").is_err());
    let combined_only =
        r#"1.2.3.4 - - [15/Jan/2024:10:04:05 +0000] "GET / HTTP/1.1" 200 5 "-" "curl""#;
    assert!(f.parse(combined_only).is_err());
    let bad_status =
        r#"1.2.3.4 - - [15/Jan/2024:10:04:05 +0000] "GET / HTTP/1.1" OK 5 "-" "curl" "-""#;
    assert!(f.parse(bad_status).is_err());
    assert!(NginxFormat::compile("$remote_addr $request_time", LatencyFrom::Request).is_err());
}
