//! Every figure in bench/results.json says where it comes from: bench/provenance.json names, for
//! each metric, the commit it was measured on, when, and the command that measured it
//! (BENCHMARKS.md gives the same command), so no figure can outlive the code it measured unseen.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use filetrail_bench::repo_root;
use filetrail_bench::report::PROVENANCE_FILE;
use serde_json::{Map, Value};

fn object(name: &str) -> Map<String, Value> {
    let path = repo_root().join("bench").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())) {
        Value::Object(map) => map,
        other => panic!("{} is not a JSON object: {other}", path.display()),
    }
}

#[test]
fn every_recorded_figure_names_its_commit_date_and_command() {
    let results = object("results.json");
    let provenance = object(PROVENANCE_FILE);
    let documented = std::fs::read_to_string(repo_root().join("BENCHMARKS.md")).unwrap();
    assert!(!results.is_empty(), "bench/results.json holds no figure");
    for (metric, value) in &results {
        assert!(
            value.is_number(),
            "{metric}: {value} is not a number (results.json stays flat)"
        );
        let Some(Value::Object(from)) = provenance.get(metric) else {
            panic!("{metric} has no entry in bench/{PROVENANCE_FILE}: record it with bench/run");
        };
        let commit = from.get("commit").and_then(Value::as_str).unwrap_or_default();
        assert!(
            commit.len() == 40 && commit.chars().all(|c| c.is_ascii_hexdigit()),
            "{metric}: commit {commit:?} is not a full commit id"
        );
        let date = from.get("date").and_then(Value::as_str).unwrap_or_default();
        assert!(
            chrono::DateTime::parse_from_rfc3339(date).is_ok(),
            "{metric}: date {date:?} is not RFC 3339"
        );
        let command = from.get("command").and_then(Value::as_str).unwrap_or_default();
        assert!(
            command.starts_with("bench/run") || command.starts_with("fuzz/run"),
            "{metric}: command {command:?} is not a bench/run or fuzz/run command"
        );
        assert!(
            documented.contains(&format!("`{metric}`")),
            "{metric} is not described in BENCHMARKS.md"
        );
    }
    for metric in provenance.keys() {
        assert!(
            results.contains_key(metric),
            "bench/{PROVENANCE_FILE} names {metric}, which results.json lacks"
        );
    }
}
