//! Metrics a function reports through its log, in CloudWatch's embedded metric format: one JSON
//! object per line on stdout, which CloudWatch Logs turns into a metric with no API call and no
//! extra permission
//! (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>).
//!
//! The schedules that work connection by connection (poll-activity, export) keep going when one
//! connection fails and answer Ok; the failures they count here are what the template's
//! `ConnectionFailuresAlarm` watches, so a connection that keeps failing does not go unnoticed.

use chrono::{DateTime, Utc};
use serde_json::json;

/// The namespace of filetrail's own metrics.
pub const NAMESPACE: &str = "filetrail";
/// Connections a scheduled run could not work on (their error is in the log line before).
pub const CONNECTION_FAILURES: &str = "ConnectionFailures";

/// The embedded-metric-format line of one count, by function and in total.
pub fn count_line(function: &str, metric: &str, count: u64, at: DateTime<Utc>) -> String {
    json!({
        "_aws": {
            "Timestamp": at.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Function"], []],
                "Metrics": [{"Name": metric, "Unit": "Count"}],
            }],
        },
        "Function": function,
        metric: count,
    })
    .to_string()
}

/// Reports how many connections `function`'s run failed on, when any did.
pub fn report_connection_failures(function: &str, failures: u64) {
    if failures > 0 {
        println!("{}", count_line(function, CONNECTION_FAILURES, failures, Utc::now()));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_count_is_one_embedded_metric_line_by_function_and_in_total() {
        let at = DateTime::parse_from_rfc3339("2026-12-07T10:00:00Z").unwrap().to_utc();
        let line = count_line("poll-activity", CONNECTION_FAILURES, 2, at);
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let spec = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(v["_aws"]["Timestamp"], 1_796_637_600_000_i64);
        assert_eq!(spec["Namespace"], "filetrail");
        assert_eq!(spec["Dimensions"], json!([["Function"], []]));
        assert_eq!(spec["Metrics"][0]["Name"], "ConnectionFailures");
        // Every dimension and metric named is a member of the root object.
        assert_eq!(v["Function"], "poll-activity");
        assert_eq!(v["ConnectionFailures"], 2);
    }
}
