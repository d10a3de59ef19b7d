//! The response types of `shared/src/api.rs` against `infra/openapi.yaml`:
//! every field a type serialises is a property of its schema, and every
//! property of the schema is a field of the type (the envelope's
//! `timestamp` and `tier` are added by `http::success`), down through
//! nested objects and arrays. A renamed field or a schema left behind fails.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};
use proxy_metrics::api::*;
use proxy_metrics::domain::event::parse_record_body;
use proxy_metrics::domain::rollup::{Rollup, Stats};
use proxy_metrics::domain::tier::Tier;
use proxy_metrics::storage::Proxy;
use serde::Serialize;
use serde_json::{Value, json};

const OPENAPI: &str = include_str!("../../../infra/openapi.yaml");
/// Added to every success body by `http::success`, not part of the types.
const ENVELOPE: [&str; 2] = ["timestamp", "tier"];

fn document() -> Value {
    serde_yaml_ng::from_str(OPENAPI).expect("openapi.yaml parses")
}

fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let found = &doc["components"]["schemas"][name];
    assert!(found.is_object(), "openapi.yaml has no schema {name}");
    found
}

/// A schema's properties (name → schema) with `$ref` and `allOf` followed.
fn properties(doc: &Value, schema_value: &Value) -> BTreeMap<String, Value> {
    let mut found = BTreeMap::new();
    if let Some(reference) = schema_value["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return properties(doc, schema(doc, name));
    }
    for part in schema_value["allOf"].as_array().into_iter().flatten() {
        found.extend(properties(doc, part));
    }
    if let Some(own) = schema_value["properties"].as_object() {
        for (k, v) in own {
            found.insert(k.clone(), v.clone());
        }
    }
    found
}

/// The schema an array property's items follow, or the property itself.
fn element_schema(property: &Value) -> &Value {
    if property["type"] == "array" {
        &property["items"]
    } else {
        property
    }
}

/// Checks `value` against `schema_value` both ways, recursively, collecting
/// every mismatch under `path`.
fn compare(doc: &Value, path: &str, schema_value: &Value, value: &Value, out: &mut Vec<String>) {
    let props = properties(doc, schema_value);
    let Some(object) = value.as_object() else {
        return;
    };
    if props.is_empty() {
        out.push(format!("{path}: the schema lists no properties"));
        return;
    }
    let fields: BTreeSet<&String> = object.keys().collect();
    for field in &fields {
        if !props.contains_key(*field) {
            out.push(format!(
                "{path}.{field}: serialised but not in openapi.yaml"
            ));
        }
    }
    for name in props.keys() {
        if !fields.contains(name) && !ENVELOPE.contains(&name.as_str()) {
            out.push(format!(
                "{path}.{name}: in openapi.yaml but not a field of the type"
            ));
        }
    }
    for (field, field_value) in object {
        let Some(property) = props.get(field) else {
            continue;
        };
        let element = element_schema(property);
        let nested = match field_value {
            Value::Array(items) => items.first(),
            Value::Object(_) => Some(field_value),
            _ => None,
        };
        if let Some(nested) = nested.filter(|n| n.is_object()) {
            compare(doc, &format!("{path}.{field}"), element, nested, out);
        }
    }
}

fn check(doc: &Value, schema_name: &str, body: &impl Serialize, out: &mut Vec<String>) {
    let value = serde_json::to_value(body).expect("serialises");
    compare(doc, schema_name, schema(doc, schema_name), &value, out);
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

/// A day with every kind of figure: latency, concurrency, an error message.
fn rich_day() -> (NaiveDate, Rollup) {
    let body = json!({"events": [{
        "eventType": "error", "timestamp": "2024-01-15T10:00:00Z", "healthy": true,
        "metrics": {
            "requestCount": 10, "successCount": 8, "errorCount": 2,
            "latencySamplesMs": [12.0, 40.0, 95.0], "dataTransferredBytes": 100,
            "dataReceivedBytes": 50, "connectionCount": 3, "concurrentConnections": 7,
            "errorMessage": "upstream timed out"
        }
    }]});
    let parsed = parse_record_body(
        body.to_string().as_bytes(),
        None,
        at("2024-01-15T12:00:00Z"),
    )
    .expect("a valid body");
    let day = NaiveDate::from_ymd_opt(2024, 1, 15).unwrap();
    (day, Rollup::of_events(day, &parsed.events))
}

#[test]
fn every_response_type_matches_its_openapi_schema() {
    let doc = document();
    let (day, rollup) = rich_day();
    let now = at("2024-01-15T12:00:00Z");
    let registered = Some(at("2024-01-01T00:00:00Z"));
    let daily = DailyMetrics::of(&rollup, day, registered, now);
    assert!(
        !daily.top_errors.is_empty(),
        "the sample must reach TopError"
    );
    let proxy = ProxyBody::of(&Proxy {
        proxy_id: "edge-eu-1".into(),
        name: Some("Edge".into()),
        owner_id: "user-1".into(),
        registered_at: now,
        tier: Tier::Free,
        fold_epoch: 0,
        bucket_retention: None,
        marked_at_ms: None,
        dims_since_ms: None,
    });
    let window = SummaryWindow::of(&Stats::default());
    let days = BTreeMap::from([(day, rollup.clone())]);
    let aggregated = AggregatedMetrics::of(&days, day, day, registered, now);

    let mut problems = Vec::new();
    check(&doc, "Proxy", &proxy, &mut problems);
    check(&doc, "TopError", &daily.top_errors[0], &mut problems);
    check(&doc, "DailyMetrics", &daily, &mut problems);
    check(&doc, "AggregatedMetrics", &aggregated, &mut problems);
    check(&doc, "SummaryWindow", &window, &mut problems);
    check(
        &doc,
        "RegisterProxyResponse",
        &RegisterProxyResponse {
            proxy: proxy.clone(),
        },
        &mut problems,
    );
    check(
        &doc,
        "ListProxiesResponse",
        &ListProxiesResponse {
            proxies: vec![proxy],
            count: 1,
        },
        &mut problems,
    );
    let outcome = EventOutcome {
        event_id: "e-1".into(),
        status: "recorded",
    };
    check(&doc, "EventOutcome", &outcome, &mut problems);
    // The single-event shape: the optional top-level fields are present.
    check(
        &doc,
        "RecordResponse",
        &RecordResponse {
            proxy_id: "edge-eu-1".into(),
            recorded: 1,
            duplicates: 0,
            events: vec![outcome],
            message: "Metrics recorded",
            event_type: Some("request"),
            event_id: Some("e-1".into()),
        },
        &mut problems,
    );
    check(
        &doc,
        "DailyMetricsResponse",
        &DailyMetricsResponse {
            proxy_id: "edge-eu-1".into(),
            date: day_str(day),
            metrics: daily.clone(),
        },
        &mut problems,
    );
    check(
        &doc,
        "DailyRangeResponse",
        &DailyRangeResponse {
            proxy_id: "edge-eu-1".into(),
            start_date: day_str(day),
            end_date: day_str(day),
            metrics: vec![daily],
            count: 1,
        },
        &mut problems,
    );
    check(
        &doc,
        "AggregationResponse",
        &AggregationResponse {
            proxy_id: "edge-eu-1".into(),
            period_start: day_str(day),
            period_end: day_str(day),
            metrics: aggregated,
        },
        &mut problems,
    );
    check(
        &doc,
        "SummaryResponse",
        &SummaryResponse {
            proxy_id: "edge-eu-1".into(),
            last_hour: window.clone(),
            last_24_hours: window,
            concurrent_connections: Some(7),
            last_event_at: Some(instant_str(now)),
        },
        &mut problems,
    );
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_series_response_matches_its_openapi_schema() {
    use proxy_metrics::domain::series::{Span, Step, points_from_buckets};
    let doc = document();
    let (_, rollup) = rich_day();
    let now = at("2024-01-15T12:00:00Z");
    let span = Span::new(
        at("2024-01-15T10:00:00Z"),
        at("2024-01-15T10:10:00Z"),
        Step::FiveMinutes,
    )
    .unwrap();
    let start = at("2024-01-15T10:00:00Z").timestamp_millis();
    let bucket = proxy_metrics::domain::rollup::Bucket {
        stats: rollup.stats.clone(),
        healthy: true,
    };
    let buckets = BTreeMap::from([(start, bucket)]);
    let points: Vec<SeriesPoint> =
        points_from_buckets(&span, &buckets, Some(at("2024-01-01T00:00:00Z")), now)
            .iter()
            .map(SeriesPoint::of)
            .collect();
    assert!(points[0].p99_latency_ms.is_some() && points[1].success_rate.is_none());
    let mut problems = Vec::new();
    check(&doc, "SeriesPoint", &points[0], &mut problems);
    check(
        &doc,
        "SeriesResponse",
        &SeriesResponse {
            proxy_id: "edge-eu-1".into(),
            from: instant_str(span.start()),
            to: instant_str(at("2024-01-15T10:10:00Z")),
            step: "5m",
            count: points.len(),
            points,
        },
        &mut problems,
    );
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_breakdown_response_matches_its_openapi_schema() {
    use proxy_metrics::handlers::{BreakdownResponse, BreakdownValue};
    let doc = document();
    let value = |v: &str, n: u64| BreakdownValue {
        value: v.into(),
        request_count: n,
        success_count: Some(n - 1),
        error_count: Some(1),
        success_rate: Some(0.9),
        average_latency_ms: Some(12.5),
        p50_latency_ms: Some(10.0),
        p95_latency_ms: Some(40.0),
        p99_latency_ms: None,
        data_transferred_bytes: Some(1234),
    };
    let class = BreakdownValue {
        success_count: None,
        error_count: None,
        success_rate: None,
        average_latency_ms: None,
        p50_latency_ms: None,
        p95_latency_ms: None,
        data_transferred_bytes: None,
        ..value("5xx", 3)
    };
    let mut problems = Vec::new();
    check(
        &doc,
        "BreakdownValue",
        &value("/api/users/:id", 10),
        &mut problems,
    );
    check(&doc, "BreakdownValue", &class, &mut problems);
    check(
        &doc,
        "BreakdownResponse",
        &BreakdownResponse {
            proxy_id: "edge-eu-1".into(),
            by: "route",
            start_date: "2024-01-15".into(),
            end_date: "2024-01-15".into(),
            values: vec![value("/a", 10), value("__other__", 4)],
            other: proxy_metrics::handlers::OtherSummary {
                event_count: 2,
                distinct_values: 3,
            },
            count: 2,
        },
        &mut problems,
    );
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn every_alert_response_type_matches_its_openapi_schema() {
    use proxy_metrics::domain::alert::RuleSpec;
    use proxy_metrics::domain::alert::eval::State;
    use proxy_metrics::storage::alerts::{AlertRule, DeliveryAttempt};
    let doc = document();
    let now = at("2024-01-15T12:00:00Z");
    let spec = RuleSpec::from_body(
        &json!({"name": "errors", "metric": "errorRate", "comparison": "above",
            "threshold": 10, "webhookUrl": "https://hooks.example.com/alerts"}),
        false,
    )
    .expect("a valid rule");
    let rule = AlertRule {
        proxy_id: "edge-eu-1".into(),
        alert_id: "al-1".into(),
        spec: spec.clone(),
        created_at: now,
        state: State::Firing,
        state_since: now,
        sequence: 1,
        last_value: Some(12.5),
        last_evaluated_at: Some(now),
        last_close: Some(now.timestamp_millis()),
        webhook_disabled: false,
        sealed_secret: vec![1, 2, 3],
    };
    // What a pending first attempt and a retried one look like.
    let deliveries: Vec<DeliveryBody> = [None, Some(now)]
        .into_iter()
        .map(|next| {
            DeliveryBody::of(&DeliveryAttempt {
                webhook_id: "msg_al-1_1".into(),
                event_type: "alert.firing".into(),
                attempt: 1,
                at: now,
                status: "500".into(),
                next_attempt_at: next,
            })
        })
        .collect();

    let mut problems = Vec::new();
    // The rule's fields with their defaults are the request's fields.
    check(&doc, "AlertRuleRequest", &spec, &mut problems);
    check(&doc, "AlertRule", &AlertBody::of(&rule), &mut problems);
    check(
        &doc,
        "CreateAlertResponse",
        &CreateAlertResponse {
            alert: AlertBody::of(&rule),
            secret: "whsec_x".into(),
        },
        &mut problems,
    );
    check(
        &doc,
        "ListAlertsResponse",
        &ListAlertsResponse {
            proxy_id: "edge-eu-1".into(),
            alerts: vec![AlertBody::of(&rule)],
            count: 1,
        },
        &mut problems,
    );
    check(
        &doc,
        "TestAlertResponse",
        &TestAlertResponse {
            alert_id: "al-1".into(),
            webhook_id: "msg_al-1_test".into(),
        },
        &mut problems,
    );
    check(&doc, "Delivery", &deliveries[1], &mut problems);
    check(
        &doc,
        "ListDeliveriesResponse",
        &ListDeliveriesResponse {
            alert_id: "al-1".into(),
            count: deliveries.len(),
            deliveries,
        },
        &mut problems,
    );
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_comparison_sees_a_renamed_or_missing_field() {
    let doc = document();
    let mut problems = Vec::new();
    let renamed = json!({"message": "x", "total": 1});
    compare(
        &doc,
        "TopError",
        schema(&doc, "TopError"),
        &renamed,
        &mut problems,
    );
    assert_eq!(
        problems,
        [
            "TopError.total: serialised but not in openapi.yaml",
            "TopError.count: in openapi.yaml but not a field of the type"
        ]
    );
    problems.clear();
    let nested = json!({"proxy": {"proxyId": "p", "name": null, "ownerId": "o"}});
    compare(
        &doc,
        "RegisterProxyResponse",
        schema(&doc, "RegisterProxyResponse"),
        &nested,
        &mut problems,
    );
    assert_eq!(
        problems,
        ["RegisterProxyResponse.proxy.registeredAt: in openapi.yaml but not a field of the type"]
    );
}
