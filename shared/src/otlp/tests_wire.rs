//! The wire: OTLP/JSON against protobuf, gzip within its limits.

use chrono::Duration;
use prost::Message;
use serde_json::json;

use super::body::{self, Format};
use super::proto::*;
use super::tests::*;
use crate::error::ApiError;

#[test]
fn json_reads_the_otlp_rules_and_equals_protobuf() {
    let t = ns(now() - Duration::seconds(10));
    let body = json!({
        "resourceMetrics": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "edge"}}]},
            "scopeMetrics": [{
                "scope": {"name": "proxy", "futureField": 1},
                "metrics": [{
                    "name": "http.server.request.duration",
                    "unit": "s",
                    "histogram": {
                        "aggregationTemporality": 1,
                        "dataPoints": [{
                            "attributes": [
                                {"key": "http.route", "value": {"stringValue": "/a"}},
                                {"key": "http.response.status_code", "value": {"intValue": "200"}},
                                {"key": "http.request.method", "value": {"stringValue": "GET"}}
                            ],
                            "startTimeUnixNano": (t - 1).to_string(),
                            "timeUnixNano": t,
                            "count": "3",
                            "sum": 0.3,
                            "bucketCounts": ["0", 1, "2", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                            "explicitBounds": BOUNDS,
                            "min": 0.004, "max": "0.01",
                            "exemplars": [{"traceId": "00", "asDouble": 1}]
                        }]
                    }
                }]
            }]
        }],
        "unknownTopLevel": {"x": [1, 2]}
    });
    let from_json = body::decode(Format::Json, body.to_string().as_bytes()).unwrap();
    let point = HistogramDataPoint {
        attributes: attrs("/a", 200),
        start_time_unix_nano: t - 1,
        time_unix_nano: t,
        count: 3,
        sum: Some(0.3),
        bucket_counts: vec![0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        explicit_bounds: BOUNDS.to_vec(),
        flags: 0,
        min: Some(0.004),
        max: Some(0.01),
    };
    let expected = export(vec![histogram(TEMPORALITY_DELTA, vec![point])]);
    assert_eq!(from_json, expected);
    let from_proto = body::decode(Format::Protobuf, &expected.encode_to_vec()).unwrap();
    assert_eq!(from_proto, expected);
    // a malformed body is a 400
    assert!(matches!(
        body::decode(Format::Json, b"{\"resourceMetrics\": 3}"),
        Err(ApiError::InvalidRequest(_))
    ));
    assert!(matches!(
        body::decode(Format::Protobuf, &[0x0a, 0xff]),
        Err(ApiError::InvalidRequest(_))
    ));
}

#[test]
fn an_array_where_a_message_belongs_is_a_400() {
    let metric = |data: &str| {
        format!(
            r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"m",{data}}}]}}]}}]}}"#
        )
    };
    let refused = [
        "[]".to_string(),
        r#"{"resourceMetrics":[[null]]}"#.to_string(),
        r#"{"resourceMetrics":[{"resource":[[]]}]}"#.to_string(),
        r#"{"resourceMetrics":[{"scopeMetrics":[{"scope":["s","1"]}]}]}"#.to_string(),
        r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[["m"]]}]}]}"#.to_string(),
        metric(r#""histogram":[[], 1]"#),
        metric(r#""gauge":{"dataPoints":[[[]]]}"#),
        metric(r#""exponentialHistogram":{"dataPoints":[{"positive":[0,[1]]}]}"#),
        metric(r#""sum":{"dataPoints":[{"attributes":[{"key":"k","value":["v"]}]}]}"#),
        metric(
            r#""sum":{"dataPoints":[{"attributes":[{"key":"k","value":{"arrayValue":[[]]}}]}]}"#,
        ),
    ];
    for body in refused {
        let answer = body::decode(Format::Json, body.as_bytes());
        assert!(
            matches!(answer, Err(ApiError::InvalidRequest(_))),
            "{body}: {answer:?}"
        );
    }
    // the same shapes as objects, and null for a message, are read
    for body in [
        r#"{"resourceMetrics":[{"resource":null,"scopeMetrics":[{"scope":{"name":"s"}}]}]}"#
            .to_string(),
        metric(r#""histogram":{"dataPoints":[]}"#),
        metric(
            r#""sum":{"dataPoints":[{"attributes":[{"key":"k","value":{"arrayValue":{"values":[]}}}]}]}"#,
        ),
    ] {
        let answer = body::decode(Format::Json, body.as_bytes());
        assert!(answer.is_ok(), "{body}: {answer:?}");
    }
}

#[test]
fn gzip_is_bounded_while_decompressing() {
    use std::io::Write;
    let gzip = |bytes: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    };
    assert_eq!(
        body::decompress(Some("gzip"), &gzip(b"abc")).unwrap(),
        b"abc"
    );
    // 9 MiB of zeros compress to ~9 KB: refused once 8 MiB came out
    let bomb = gzip(&vec![0u8; 9 * 1024 * 1024]);
    assert!(bomb.len() < 64 * 1024);
    assert!(matches!(
        body::decompress(Some("gzip"), &bomb),
        Err(ApiError::PayloadTooLarge(_))
    ));
    assert!(matches!(
        body::decompress(None, &vec![0u8; 1024 * 1024 + 1]),
        Err(ApiError::PayloadTooLarge(_))
    ));
    assert!(matches!(
        body::decompress(Some("gzip"), b"not gzip"),
        Err(ApiError::InvalidRequest(_))
    ));
    assert!(matches!(
        body::decompress(Some("br"), b"x"),
        Err(ApiError::UnsupportedMediaType(_))
    ));
    assert!(matches!(
        Format::of(Some("text/plain")),
        Err(ApiError::UnsupportedMediaType(_))
    ));
    assert_eq!(
        Format::of(Some("application/x-protobuf; charset=x")).unwrap(),
        Format::Protobuf
    );
}
