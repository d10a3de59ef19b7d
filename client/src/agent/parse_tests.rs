//! Lines of each format as proxies really write them.

use super::*;
use chrono::TimeZone;

fn nginx(line: &str) -> Result<Option<LogRecord>, Malformed> {
    parse_line(&Format::Nginx, line)
}

fn envoy(line: &str) -> Result<Option<LogRecord>, Malformed> {
    parse_line(&Format::Envoy, line)
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

#[test]
fn nginx_main_format_with_request_time() {
    let r = nginx(r#"203.0.113.7 - - [15/Jan/2024:11:04:05 +0100] "GET /api/items?id=3 HTTP/1.1" 200 5123 "-" "curl/8.5.0" 0.012"#)
        .unwrap()
        .unwrap();
    assert_eq!(r.time, Some(utc(2024, 1, 15, 10, 4, 5)));
    assert_eq!(r.status, 200);
    assert_eq!(r.bytes_sent, 5123);
    assert_eq!(r.latency_ms, Some(12.0));
    assert!(!r.is_error());
}

#[test]
fn nginx_lines_as_they_really_look() {
    let lines = [
        // user, referer and an agent full of spaces and parentheses
        r#"198.51.100.23 - alice [15/Jan/2024:10:04:05 +0000] "POST /login HTTP/2.0" 302 0 "https://example.com/" "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36" 0.104"#,
        // an IPv6 client and an escaped quote in the request (nginx writes \x22)
        r#"2001:db8::1 - - [15/Jan/2024:10:04:05 +0000] "GET /search?q=\x22rust\x22 HTTP/1.1" 404 153 "-" "-" 0.000"#,
        // a TLS handshake sent to a plain-HTTP port
        r#"192.0.2.9 - - [15/Jan/2024:10:04:05 +0000] "\x16\x03\x01\x00\xA5\x01\x00\x00\xA1\x03\x03" 400 157 "-" "-" 0.001"#,
        // escape=json writes \" inside quotes
        r#"192.0.2.9 - - [15/Jan/2024:10:04:05 +0000] "GET /a\"b HTTP/1.1" 200 1 "-" "ua \"x\"" 1.5"#,
        // the client went away
        r#"192.0.2.10 - - [15/Jan/2024:10:04:05 +0000] "GET /slow HTTP/1.1" 499 0 "-" "curl/8" 30.001"#,
    ];
    let parsed: Vec<LogRecord> = lines.iter().map(|l| nginx(l).unwrap().unwrap()).collect();
    assert_eq!(
        parsed.iter().map(|r| r.status).collect::<Vec<_>>(),
        [302, 404, 400, 200, 499]
    );
    assert_eq!(parsed[0].latency_ms, Some(104.0));
    assert_eq!(parsed[3].latency_ms, Some(1500.0));
    assert_eq!(parsed[4].latency_ms, Some(30001.0));
    assert!(
        parsed.iter().all(|r| !r.is_error()),
        "4xx are not proxy errors"
    );
}

#[test]
fn nginx_errors_and_missing_values() {
    let r = nginx(
        r#"10.0.0.1 - - [15/Jan/2024:10:04:05 +0000] "GET / HTTP/1.1" 502 552 "-" "curl/8" -"#,
    )
    .unwrap()
    .unwrap();
    assert!(r.is_error());
    assert_eq!(r.latency_ms, None);
    let o = r.to_observation();
    assert!(o.error);
    assert_eq!(o.error_message.as_deref(), Some("HTTP 502"));
    assert_eq!(o.bytes_sent, 552);
    // plain combined: no request time at all
    let r =
        nginx(r#"10.0.0.1 - - [15/Jan/2024:10:04:05 +0000] "GET / HTTP/1.1" 200 - "-" "curl/8""#)
            .unwrap()
            .unwrap();
    assert_eq!((r.latency_ms, r.bytes_sent), (None, 0));
    // a time that does not parse leaves the receipt time
    let r = nginx(r#"10.0.0.1 - - [yesterday] "GET / HTTP/1.1" 200 1 "-" "-" 0.1"#)
        .unwrap()
        .unwrap();
    assert_eq!(r.time, None);
}

#[test]
fn malformed_nginx_lines_are_refused_not_guessed() {
    for line in [
        "garbage",
        r#"10.0.0.1 - - 15/Jan/2024:10:04:05 "GET / HTTP/1.1" 200 1 "-" "-" 0.1"#,
        r#"10.0.0.1 - - [15/Jan/2024:10:04:05 +0000] "GET / HTTP/1.1 200 1 "-" "-" 0.1"#,
        r#"10.0.0.1 - - [15/Jan/2024:10:04:05 +0000] "GET / HTTP/1.1" OK 1 "-" "-" 0.1"#,
        r#"10.0.0.1 - - [15/Jan/2024:10:04:05 +0000] "GET / HTTP/1.1" 2000 1 "-" "-" 0.1"#,
        r#"10.0.0.1 - - [15/Jan/2024:10:04:05 +0000] "GET / HTTP/1.1" 200 -5 "-" "-" 0.1"#,
        r#"10.0.0.1 - - [15/Jan/2024:10:04:05 +0000] "GET / HTTP/1.1" 200 1 "-" "-" fast"#,
        r#"10.0.0.1 - - [15/Jan/2024:10:04:05 +0000] "GET / HTTP/1.1" 200 1 "-" "-" NaN"#,
        r#"10.0.0.1 - - [15/Jan/2024:10:04:05 +0000] "GET / HTTP/1.1" 200 1"#,
        // a line cut in the middle (a truncated write)
        r#"10.0.0.1 - - [15/Jan/2024:10:04:05 +0000] "GET / HT"#,
    ] {
        assert!(nginx(line).is_err(), "{line}");
    }
    assert_eq!(nginx("   "), Ok(None));
    assert_eq!(nginx(""), Ok(None));
}

#[test]
fn envoy_default_format_as_json() {
    let line = r#"{"start_time":"2024-01-15T10:04:05.123Z","method":"GET","path":"/api/v1/items","protocol":"HTTP/1.1","response_code":200,"response_flags":"-","bytes_received":0,"bytes_sent":2345,"duration":17,"upstream_service_time":"15","x_forwarded_for":null,"user_agent":"curl/8.5.0","request_id":"8a3c7e5c-6f2b-4d8e-9c3a-1b2d3e4f5a6b","authority":"api.example.com","upstream_host":"10.0.3.7:8080"}"#;
    let r = envoy(line).unwrap().unwrap();
    assert_eq!(
        r.time,
        Some(utc(2024, 1, 15, 10, 4, 5) + chrono::Duration::milliseconds(123))
    );
    assert_eq!(
        (
            r.status,
            r.bytes_sent,
            r.bytes_received,
            r.latency_ms,
            r.flags.clone()
        ),
        (200, 2345, 0, Some(17.0), None)
    );
    // numbers as strings (older Envoys, or a format written with quotes)
    let line = r#"{"start_time":"2024-01-15T10:04:05.123Z","response_code":"503","response_flags":"UF,URX","bytes_received":"120","bytes_sent":"91","duration":"5003"}"#;
    let r = envoy(line).unwrap().unwrap();
    assert_eq!(
        (r.status, r.bytes_received, r.latency_ms),
        (503, 120, Some(5003.0))
    );
    assert!(r.is_error());
    assert_eq!(
        r.to_observation().error_message.as_deref(),
        Some("HTTP 503 (UF,URX)")
    );
}

#[test]
fn envoy_status_zero_is_an_error_only_with_a_reason_other_than_dc() {
    let zero = |flags: &str| {
        envoy(&format!(
            r#"{{"start_time":"2024-01-15T10:04:05.000Z","response_code":0,"response_flags":{flags},"bytes_received":0,"bytes_sent":0,"duration":null}}"#
        ))
        .unwrap()
        .unwrap()
    };
    assert!(!zero(r#""DC""#).is_error());
    assert!(!zero(r#""-""#).is_error());
    assert!(!zero("null").is_error());
    let uc = zero(r#""UC""#);
    assert!(uc.is_error());
    assert_eq!(uc.latency_ms, None);
    assert_eq!(
        uc.to_observation().error_message.as_deref(),
        Some("no response (UC)")
    );
}

#[test]
fn envoy_default_text_format() {
    let line = r#"[2016-04-15T20:17:00.310Z] "POST /api/v1/locations HTTP/2" 204 - 154 0 226 100 "10.0.35.28" "nsq2http" "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2" "locations" "tcp://10.0.2.1:80""#;
    let r = envoy(line).unwrap().unwrap();
    assert_eq!(
        r.time,
        Some(utc(2016, 4, 15, 20, 17, 0) + chrono::Duration::milliseconds(310))
    );
    assert_eq!(
        (
            r.status,
            r.bytes_received,
            r.bytes_sent,
            r.latency_ms,
            r.flags
        ),
        (204, 154, 0, Some(226.0), None)
    );
    let line = r#"[2024-01-15T10:04:05.001Z] "GET / HTTP/1.1" 503 UH 0 19 0 - "-" "curl/8" "id" "host" "-""#;
    let r = envoy(line).unwrap().unwrap();
    assert!(r.is_error());
    assert_eq!(r.flags.as_deref(), Some("UH"));
}

#[test]
fn malformed_envoy_lines() {
    for line in [
        r#"{"start_time":"2024-01-15T10:04:05.000Z""#,
        r#"{"response_code":"abc","bytes_sent":1}"#,
        r#"{"bytes_sent":1}"#,
        r#"{"response_code":200,"bytes_sent":-1}"#,
        r#"{"response_code":200,"bytes_sent":1.5}"#,
        r#"{"response_code":200,"duration":"slow"}"#,
        r#"[1,2,3]"#,
        r#"[2024-01-15T10:04:05.001Z] "GET / HTTP/1.1" abc - 0 19 0"#,
        r#"[2024-01-15T10:04:05.001Z] "GET / HTTP/1.1" 200 -"#,
        "not a log line",
    ] {
        assert!(envoy(line).is_err(), "{line}");
    }
}

#[test]
fn generic_json_with_a_mapping() {
    // Caddy's JSON access log
    let caddy = JsonMapping {
        time_field: Some("ts".into()),
        status_field: "status".into(),
        duration_field: Some("duration".into()),
        duration_unit: DurationUnit::Seconds,
        bytes_sent_field: Some("size".into()),
        bytes_received_field: Some("bytes_read".into()),
        route_field: Some("request.uri".into()),
        upstream_field: None,
    };
    let line = r#"{"level":"info","ts":1705313045.5,"logger":"http.log.access","msg":"handled request","request":{"remote_ip":"127.0.0.1","method":"GET","uri":"/","headers":{"Accept":["*/*"]}},"bytes_read":12,"user_id":"","duration":0.0025,"size":10,"status":200,"resp_headers":{"Server":["Caddy"]}}"#;
    let r = parse_line(&Format::Json(caddy), line).unwrap().unwrap();
    assert_eq!(
        r.time,
        Some(utc(2024, 1, 15, 10, 4, 5) + chrono::Duration::milliseconds(500))
    );
    assert_eq!((r.status, r.bytes_sent, r.bytes_received), (200, 10, 12));
    assert_eq!(r.latency_ms, Some(2.5));

    // the defaults: nginx variables in a JSON log_format
    let line = r#"{"time":"2024-01-15T11:04:05+01:00","status":"504","request_time":"60.001","body_bytes_sent":"0","request_length":"411"}"#;
    let r = parse_line(&Format::Json(JsonMapping::default()), line)
        .unwrap()
        .unwrap();
    assert_eq!(r.time, Some(utc(2024, 1, 15, 10, 4, 5)));
    assert_eq!(
        (r.status, r.bytes_received, r.latency_ms),
        (504, 411, Some(60001.0))
    );
    assert!(r.is_error());

    // epoch milliseconds, a millisecond duration, no bytes fields
    let m = JsonMapping {
        time_field: Some("t".into()),
        duration_field: Some("ms".into()),
        duration_unit: DurationUnit::Millis,
        bytes_sent_field: None,
        bytes_received_field: None,
        ..JsonMapping::default()
    };
    let r = parse_line(
        &Format::Json(m.clone()),
        r#"{"t":1705313045000,"status":201,"ms":7}"#,
    )
    .unwrap()
    .unwrap();
    assert_eq!(r.time, Some(utc(2024, 1, 15, 10, 4, 5)));
    assert_eq!(r.latency_ms, Some(7.0));
    assert!(parse_line(&Format::Json(m.clone()), r#"{"t":1,"code":201}"#).is_err());
    // a dotted name reaches into nested objects
    let nested = JsonMapping {
        status_field: "http.response.status_code".into(),
        ..m.clone()
    };
    let r = parse_line(
        &Format::Json(nested),
        r#"{"http":{"response":{"status_code":500}}}"#,
    )
    .unwrap()
    .unwrap();
    assert!(r.is_error());
    assert!(parse_line(&Format::Json(m), "{not json").is_err());
}
