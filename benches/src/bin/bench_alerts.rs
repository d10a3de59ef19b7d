//! What `evaluate-alerts` costs, in the units DynamoDB bills (as dynoxide
//! reports them through `ReturnConsumedCapacity`, summed by the store's
//! meter, `Store::usage()`): per rule per run, per state change, and a month
//! of 10 rules on each of the reference fleet's 1,000 proxies. Prints
//! markdown; `scripts/bench` runs it.
//!
//! ```sh
//! cargo run --release -p proxy-metrics-benches --bin bench_alerts
//! ```

#[path = "../../../tests/tests/common/mod.rs"]
mod common;

use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use common::record::{full_events, metered_record};
use common::{Harness, Req, parts, token_at};
use proxy_metrics::alerts::secret::{LOCAL_SECRET_KEY, SecretKey};
use proxy_metrics::alerts::{AlertsConfig, Report, run::run};
use proxy_metrics::storage::Usage;
use proxy_metrics::{aggregate, handlers};
use serde_json::{Value, json};

/// On-demand list prices (us-east-1): per million write / read request units
/// (as in bench_cost and BENCHMARKS.md).
const USD_PER_MILLION_WRU: f64 = 0.625;
const USD_PER_MILLION_RRU: f64 = 0.125;

/// Measured here: proxies with data and 10 rules each (1,000 rules).
const PROXIES: usize = 100;
const RULES_PER_PROXY: usize = 10;
/// The fleet priced: 10 rules on each of 1,000 proxies.
const FLEET_PROXIES: f64 = 1_000.0;
/// A 30-day month: a run every minute; a 5-minute rule is due every 5th.
const RUNS_PER_MONTH: f64 = 60.0 * 24.0 * 30.0;
const EVALUATIONS_PER_MONTH: f64 = 12.0 * 24.0 * 30.0;

const METRICS: [(&str, &str, f64); 6] = [
    ("errorRate", "above", 50.0),
    ("p95LatencyMs", "above", 5_000.0),
    ("p99LatencyMs", "above", 10_000.0),
    ("averageLatencyMs", "above", 5_000.0),
    ("requestCount", "below", 1.0),
    ("uptimePercentage", "below", 10.0),
];

fn config() -> AlertsConfig {
    AlertsConfig {
        key: SecretKey::from_base64(LOCAL_SECRET_KEY).expect("the local key"),
        allow_loopback: true,
    }
}

/// A webhook receiver on 127.0.0.1 answering 200.
async fn receiver() -> String {
    let app = axum::Router::new().route("/hook", axum::routing::post(|| async { StatusCode::OK }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let url = format!("http://{}/hook", listener.local_addr().expect("bound"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn create(h: &Harness, token: &str, proxy: &str, rule: Value) {
    let req = Req::new("POST", "/proxies/{proxyId}/alerts")
        .param("proxyId", proxy)
        .bearer(token)
        .json(rule)
        .build();
    let (s, b, _) = parts(handlers::create_alert(&h.app, req).await);
    assert_eq!(s, 201, "{b}");
}

async fn metered_run(h: &Harness) -> (Report, Usage) {
    let before = h.app.store.usage();
    let report = run(&h.app.store, &config()).await.expect("a run");
    (report, h.app.store.usage() - before)
}

/// The 5-minute boundary at or before `at`.
fn aligned(at: DateTime<Utc>) -> DateTime<Utc> {
    let ms = at.timestamp_millis();
    DateTime::from_timestamp_millis(ms - ms.rem_euclid(300_000)).unwrap_or(at)
}

fn row(name: &str, report: &Report, used: &Usage, per: f64) {
    println!(
        "| {name} | {} | {} | {} | {} | {:.3} | {:.3} |",
        report.rules_evaluated,
        used.queries,
        used.read_units,
        used.write_units,
        used.read_units / per,
        used.write_units / per
    );
}

/// A run over one proxy with one 1-of-1 error-rate rule at `threshold` %
/// (the data has 5 % errors): its report and usage.
async fn one_rule_run(close: DateTime<Utc>, url: &str, threshold: f64) -> (Report, Usage) {
    let start = close - Duration::minutes(10);
    let h = Harness::start_with_at(
        &[
            ("ALERTS_SECRET_KEY", LOCAL_SECRET_KEY),
            ("ALLOW_LOOPBACK_WEBHOOKS", "1"),
        ],
        start,
    )
    .await;
    let token = token_at("bench", json!({"tier": "enterprise"}), start);
    h.register(&token, "one").await;
    let at = close - Duration::seconds(70);
    h.app.clock.set(at);
    let events = full_events(6, "one", at);
    metered_record(&h, &token, "one", Some(0), json!({"events": events})).await;
    h.app.clock.set(close + Duration::seconds(10));
    create(
        &h,
        &token,
        "one",
        json!({"name": "errors", "metric": "errorRate",
        "comparison": "above", "threshold": threshold, "noData": "ok", "webhookUrl": url}),
    )
    .await;
    h.app.clock.set(close + Duration::seconds(30));
    metered_run(&h).await
}

#[tokio::main]
async fn main() {
    let close = aligned(common::now());
    let start = close - Duration::minutes(20);
    let h = Harness::start_with_at(
        &[
            ("ALERTS_SECRET_KEY", LOCAL_SECRET_KEY),
            ("ALLOW_LOOPBACK_WEBHOOKS", "1"),
        ],
        start,
    )
    .await;
    let token = token_at("bench", json!({"tier": "enterprise"}), start);
    let url = receiver().await;
    let proxies: Vec<String> = (0..PROXIES).map(|p| format!("edge-{p:03}")).collect();
    for p in &proxies {
        h.register(&token, p).await;
    }
    // 20 minutes of the reference fleet's traffic (a sequenced batch of 6
    // a minute per proxy), folded every 5 minutes as the schedule does.
    for minute in 0..20i64 {
        let at = start + Duration::minutes(minute) + Duration::seconds(50);
        h.app.clock.set(at);
        for p in &proxies {
            let events = full_events(6, &format!("{p}-{minute}"), at);
            metered_record(
                &h,
                &token,
                p,
                Some(minute as u64),
                json!({"events": events}),
            )
            .await;
        }
        if minute % 5 == 4 {
            aggregate::run_all(&h.app.store).await.expect("aggregation");
        }
    }
    h.app.clock.set(close + Duration::seconds(10));
    for p in &proxies {
        for r in 0..RULES_PER_PROXY {
            let (metric, comparison, threshold) = METRICS[r % METRICS.len()];
            create(
                &h,
                &token,
                p,
                json!({"name": format!("rule {r}"), "metric": metric,
                "comparison": comparison, "threshold": threshold, "evaluations": 3,
                "breaching": 2, "noData": "ok", "webhookUrl": url}),
            )
            .await;
        }
    }
    let rules = (PROXIES * RULES_PER_PROXY) as f64;

    println!("## Alert evaluation: cost per rule per run (issue 22)\n");
    println!(
        "{PROXIES} proxies × {RULES_PER_PROXY} rules (5-minute windows, 2 of 3, six metrics), 20 minutes of data (a sequenced batch of 6 a minute each, aggregated every 5 minutes); strongly consistent reads.\n"
    );
    println!("| run | rules evaluated | queries | RRU | WRU | RRU/rule | WRU/rule |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    // A window has closed: every rule is due (one bucket read per proxy,
    // one write per rule).
    h.app.clock.set(close + Duration::seconds(30));
    let (due_report, due) = metered_run(&h).await;
    assert_eq!(due_report.rules_evaluated as f64, rules, "{due_report:?}");
    assert_eq!(due_report.state_changes, 0, "{due_report:?}");
    row("a window closed: every rule due", &due_report, &due, rules);
    // The next minute: nothing due, the rules are only listed.
    h.app.clock.set(close + Duration::seconds(90));
    let (idle_report, idle) = metered_run(&h).await;
    assert_eq!(idle_report.rules_evaluated, 0, "{idle_report:?}");
    row(
        "no window closed: rules listed only",
        &idle_report,
        &idle,
        rules,
    );

    // One state change: the transaction (rule, change, outbox), the
    // delivery's claim, its log entry and the outbox's removal; against the
    // same run without the change.
    let (quiet_report, quiet) = one_rule_run(close, &url, 99.0).await;
    assert_eq!(quiet_report.state_changes, 0, "{quiet_report:?}");
    row("one rule, alone, no change", &quiet_report, &quiet, 1.0);
    let (change_report, change) = one_rule_run(close, &url, 1.0).await;
    assert_eq!(
        (
            change_report.state_changes,
            change_report.deliveries_succeeded
        ),
        (1, 1),
        "{change_report:?}"
    );
    row(
        "one rule, alone, firing: webhook sent (200)",
        &change_report,
        &change,
        1.0,
    );
    let change_wru = change.write_units - quiet.write_units;
    let change_rru = change.read_units - quiet.read_units;

    // The month: every rule is listed each minute, evaluated every 5.
    let fleet_rules = FLEET_PROXIES * RULES_PER_PROXY as f64;
    let list_rru_per_rule = idle.read_units / rules;
    let eval_rru_per_rule = (due.read_units - idle.read_units) / rules;
    let eval_wru_per_rule = due.write_units / rules;
    let list_rru = RUNS_PER_MONTH * fleet_rules * list_rru_per_rule;
    let eval_rru = EVALUATIONS_PER_MONTH * fleet_rules * eval_rru_per_rule;
    let eval_wru = EVALUATIONS_PER_MONTH * fleet_rules * eval_wru_per_rule;
    let usd = |units: f64, price: f64| units / 1e6 * price;
    println!(
        "\n## Monthly cost of 10 rules on each of 1,000 proxies (DynamoDB on-demand, us-east-1 list prices)\n"
    );
    println!("| item | arithmetic | units/month | USD/month |");
    println!("|---|---|---:|---:|");
    println!(
        "| listing the rules (every run) | {RUNS_PER_MONTH:.0} runs × {fleet_rules:.0} rules × {list_rru_per_rule:.4} RRU | {list_rru:.3e} RRU | {:.2} |",
        usd(list_rru, USD_PER_MILLION_RRU)
    );
    println!(
        "| reading the windows (when due) | {EVALUATIONS_PER_MONTH:.0} × {fleet_rules:.0} × {eval_rru_per_rule:.4} RRU | {eval_rru:.3e} RRU | {:.2} |",
        usd(eval_rru, USD_PER_MILLION_RRU)
    );
    println!(
        "| recording each evaluation | {EVALUATIONS_PER_MONTH:.0} × {fleet_rules:.0} × {eval_wru_per_rule:.3} WRU | {eval_wru:.3e} WRU | {:.2} |",
        usd(eval_wru, USD_PER_MILLION_WRU)
    );
    let total = usd(list_rru + eval_rru, USD_PER_MILLION_RRU) + usd(eval_wru, USD_PER_MILLION_WRU);
    println!("| **total (no state change)** | | | **{total:.2}** |");
    let changes = fleet_rules * 30.0;
    let change_usd =
        changes * (usd(change_wru, USD_PER_MILLION_WRU) + usd(change_rru, USD_PER_MILLION_RRU));
    println!(
        "\nEach state change with its delivery adds {change_wru} WRU and {change_rru} RRU: at one change a day per rule ({changes:.0} a month) that is ${change_usd:.2} more."
    );
}
