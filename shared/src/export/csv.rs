//! Daily metrics objects as CSV (RFC 4180: CRLF line ends, fields quoted
//! when they need it), for `GET /proxy/metrics/{proxyId}/daily?format=csv`.

use serde_json::Value;

use crate::api::DAILY_FIELDS;

/// The media type of the CSV export.
pub const CSV_CONTENT_TYPE: &str = "text/csv; charset=utf-8";

/// The five columns `statusCounts` becomes (contract v3), after `errorCount`.
const STATUS_COLUMNS: [(&str, &str); 5] = [
    ("status1xx", "1xx"),
    ("status2xx", "2xx"),
    ("status3xx", "3xx"),
    ("status4xx", "4xx"),
    ("status5xx", "5xx"),
];

/// The CSV columns: the daily object's fields in the contract's order, but
/// `topErrors` (a list, which has no cell), with `statusCounts` as five.
pub fn daily_columns() -> impl Iterator<Item = &'static str> {
    DAILY_FIELDS
        .into_iter()
        .filter(|f| *f != "topErrors")
        .flat_map(|f| match f {
            "statusCounts" => STATUS_COLUMNS.iter().map(|(column, _)| *column).collect(),
            f => vec![f],
        })
}

/// A column's value in a daily object.
fn field<'a>(day: &'a Value, column: &str) -> Option<&'a Value> {
    match STATUS_COLUMNS.iter().find(|(c, _)| *c == column) {
        Some((_, class)) => day.get("statusCounts").and_then(|s| s.get(*class)),
        None => day.get(column),
    }
}

/// One cell: a number as JSON writes it, a string as is, `null` as an empty cell.
fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// A header row of [`daily_columns`], then one row per daily object.
pub fn daily_csv(days: &[Value]) -> Result<Vec<u8>, String> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    writer
        .write_record(daily_columns())
        .map_err(|e| e.to_string())?;
    for day in days {
        writer
            .write_record(daily_columns().map(|column| cell(field(day, column))))
            .map_err(|e| e.to_string())?;
    }
    writer.into_inner().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn header_in_contract_order_nulls_empty_and_quoting_where_needed() {
        let days = vec![
            json!({"date": "2024-01-15", "eventCount": 2, "successRate": 0.5,
                   "statusCounts": {"1xx": 0, "2xx": 1, "3xx": 0, "4xx": 0, "5xx": 1},
                   "averageLatencyMs": null, "uptimePercentage": 99.5,
                   "topErrors": [{"message": "a, \"b\"", "count": 1}]}),
            // a text cell that needs quoting (no field of today's object does)
            json!({"date": "a,\"b\"\nc"}),
        ];
        let text = String::from_utf8(daily_csv(&days).unwrap()).unwrap();
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(
            lines[0],
            "date,eventCount,requestCount,successCount,errorCount,status1xx,status2xx,\
             status3xx,status4xx,status5xx,successRate,\
             averageLatencyMs,minLatencyMs,maxLatencyMs,p50LatencyMs,p95LatencyMs,\
             p99LatencyMs,dataTransferredBytes,dataReceivedBytes,connectionCount,\
             peakConcurrentConnections,averageConcurrentConnections,uptimePercentage"
        );
        assert_eq!(lines[1], "2024-01-15,2,,,,0,1,0,0,1,0.5,,,,,,,,,,,,99.5");
        assert!(text.contains("\"a,\"\"b\"\"\nc\",,"), "{text}");
        assert!(text.ends_with("\r\n"));
        assert!(!text.contains("topErrors"));
    }
}
