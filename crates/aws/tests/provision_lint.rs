//! template.yaml passes the linters AWS ships: `sam validate --lint` (SAM transform + cfn-lint)
//! and `cfn-lint` on its own, run from the project virtualenv that `infra/local/setup` creates.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv tool, or `None` (with a printed reason) when it is missing outside CI. Under
/// `CI=true` a missing tool fails the test: CI runs `infra/local/setup` first.
fn venv_tool(name: &str) -> Option<PathBuf> {
    let path = workspace_root().join(".venv/bin").join(name);
    if path.is_file() {
        return Some(path);
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(
        !ci,
        "{} is missing under CI; infra/local/setup must install it",
        path.display()
    );
    eprintln!(
        "SKIPPED: {} is missing; run infra/local/setup to lint template.yaml",
        path.display()
    );
    None
}

fn run(tool: &Path, args: &[&str]) -> (bool, String) {
    match Command::new(tool)
        .args(args)
        .current_dir(workspace_root())
        .env("SAM_CLI_TELEMETRY", "0")
        .output()
    {
        Ok(out) => (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        Err(e) => (false, format!("cannot run {}: {e}", tool.display())),
    }
}

#[test]
fn template_passes_sam_validate_lint() {
    let Some(sam) = venv_tool("sam") else { return };
    let (ok, output) = run(&sam, &["validate", "--lint", "-t", "template.yaml"]);
    assert!(ok, "sam validate --lint -t template.yaml failed:\n{output}");
}

#[test]
fn template_passes_cfn_lint() {
    let Some(cfn_lint) = venv_tool("cfn-lint") else { return };
    let (ok, output) = run(&cfn_lint, &["template.yaml"]);
    assert!(ok, "cfn-lint template.yaml failed:\n{output}");
}

/// infra/local/test runs checkov on template.yaml and fails on any failed check; a check may be
/// skipped only with the reason beside it, for a reviewer to judge.
#[test]
fn every_check_checkov_skips_says_why() {
    let text = std::fs::read_to_string(workspace_root().join("template.yaml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let resources = doc["Resources"].as_mapping().unwrap();
    let mut skips = 0;
    let mut unexplained = Vec::new();
    for (name, resource) in resources {
        let Some(list) = resource["Metadata"]["checkov"]["skip"].as_sequence() else {
            continue;
        };
        for skip in list {
            skips += 1;
            let id = skip["id"].as_str().unwrap_or_default();
            let why = skip["comment"].as_str().unwrap_or_default().trim();
            if !id.starts_with("CKV_") || why.split_whitespace().count() < 4 {
                unexplained.push(format!("{}: {id:?} {why:?}", name.as_str().unwrap_or("?")));
            }
        }
    }
    assert!(skips > 0, "template.yaml skips no checkov check: the parsing is wrong");
    assert!(
        unexplained.is_empty(),
        "checkov skips without a reason: {unexplained:?}"
    );
}

/// A dead-letter queue holds work that failed repeatedly, waiting for `filetrail redrive`:
/// deleting or replacing the stack must not delete it.
#[test]
fn every_dead_letter_queue_outlives_the_stack() {
    let text = std::fs::read_to_string(workspace_root().join("template.yaml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let resources = doc["Resources"].as_mapping().unwrap();
    let mut targets = Vec::new();
    for (_, resource) in resources {
        let target = &resource["Properties"]["RedrivePolicy"]["deadLetterTargetArn"];
        if let Some(id) = target["Fn::GetAtt"]
            .as_sequence()
            .and_then(|a| a.first())
            .and_then(|v| v.as_str())
        {
            targets.push(id.to_owned());
        } else if let Some(tagged) = target.as_str().or_else(|| {
            // `!GetAtt X.Arn` parses as a tagged scalar.
            match target {
                serde_yaml::Value::Tagged(t) => t.value.as_str(),
                _ => None,
            }
        }) {
            targets.push(tagged.split('.').next().unwrap_or_default().to_owned());
        }
    }
    assert!(targets.len() >= 4, "the work queues' dead-letter queues: {targets:?}");
    for id in &targets {
        let queue = &doc["Resources"][id.as_str()];
        assert_eq!(
            (queue["DeletionPolicy"].as_str(), queue["UpdateReplacePolicy"].as_str()),
            (Some("Retain"), Some("Retain")),
            "{id}"
        );
    }
}

/// Every alarm notifies the alarm topic (which an admin subscribes to); every function has an
/// errors alarm; the activity backlog alarm fires well before the audit feed's 7-day retention.
#[test]
fn every_alarm_reaches_someone_and_every_function_has_one() {
    let text = std::fs::read_to_string(workspace_root().join("template.yaml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let resources = doc["Resources"].as_mapping().unwrap();
    let reference = |v: &serde_yaml::Value| -> Option<String> {
        match v {
            serde_yaml::Value::Tagged(t) if t.tag == "!Ref" => t.value.as_str().map(str::to_owned),
            other => other["Ref"].as_str().map(str::to_owned),
        }
    };
    let mut watched = std::collections::BTreeSet::new();
    let mut alarms = 0;
    for (name, resource) in resources {
        if resource["Type"].as_str() != Some("AWS::CloudWatch::Alarm") {
            continue;
        }
        alarms += 1;
        let name = name.as_str().unwrap_or("?");
        let props = &resource["Properties"];
        let actions: Vec<String> = props["AlarmActions"]
            .as_sequence()
            .map(|a| a.iter().filter_map(reference).collect())
            .unwrap_or_default();
        assert_eq!(actions, ["AlarmTopic"], "{name} notifies nobody");
        if props["Namespace"].as_str() == Some("AWS/Lambda") {
            for d in props["Dimensions"].as_sequence().unwrap() {
                watched.extend(reference(&d["Value"]));
            }
        }
        if props["MetricName"].as_str() == Some("ApproximateAgeOfOldestMessage") {
            assert!(props["Threshold"].as_u64().unwrap() <= 24 * 3600, "{name}");
        }
    }
    let functions: std::collections::BTreeSet<String> = resources
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::Serverless::Function"))
        .filter_map(|(id, _)| id.as_str().map(str::to_owned))
        .collect();
    assert!(alarms > functions.len(), "{alarms} alarms");
    assert_eq!(watched, functions, "functions with an errors alarm");
}
