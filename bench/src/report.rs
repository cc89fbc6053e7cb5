//! Figures, their baselines, the printed table, `bench/results.json` and, beside it,
//! `bench/provenance.json`: the commit, date and command each figure was measured with.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::BenchError;

/// Decimal places kept in `results.json`.
const RESULT_DECIMALS: i32 = 4;

/// A target a figure should meet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    /// The value must not exceed this.
    AtMost(f64),
}

impl Goal {
    /// Whether `value` meets the goal.
    pub fn met_by(self, value: f64) -> bool {
        match self {
            Self::AtMost(limit) => value <= limit,
        }
    }
}

impl std::fmt::Display for Goal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AtMost(limit) => write!(f, "<= {}", number(*limit)),
        }
    }
}

/// One measured figure and the baseline measured in the same run.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// The key in `results.json`.
    pub metric: &'static str,
    pub value: f64,
    /// The same quantity for the baseline.
    pub baseline: f64,
    /// What the baseline is (`naive: 1 GET per user`).
    pub baseline_label: String,
    pub goal: Option<Goal>,
}

impl Figure {
    /// `value / baseline` (`NaN` when the baseline is 0).
    pub fn ratio(&self) -> f64 {
        if self.baseline == 0.0 {
            f64::NAN
        } else {
            self.value / self.baseline
        }
    }
}

/// The median of `values` (the mean of the middle two for an even count; 0 when empty): the
/// figure of repeated short measurements, robust to one disturbed pass.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// A number with at most four significant decimals, without trailing zeros.
fn number(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".to_owned();
    }
    let decimals = if v.abs() >= 100.0 {
        1
    } else if v.abs() >= 1.0 {
        3
    } else {
        4
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// The table the benchmark prints: metric, value, baseline (with what it is), ratio, goal.
pub fn render_table(figures: &[Figure]) -> String {
    let header = ["metric", "value", "baseline", "ratio", "goal"];
    let rows: Vec<[String; 5]> = figures
        .iter()
        .map(|f| {
            let goal = match f.goal {
                Some(g) if g.met_by(f.value) => format!("{g} (met)"),
                Some(g) => format!("{g} (MISSED)"),
                None => "-".to_owned(),
            };
            [
                f.metric.to_owned(),
                number(f.value),
                format!("{} ({})", number(f.baseline), f.baseline_label),
                format!("{}x", number(f.ratio())),
                goal,
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let padded: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(&header.map(str::to_owned));
    line(&widths.map(|w| "-".repeat(w)));
    for row in &rows {
        line(row);
    }
    out
}

fn rounded(v: f64) -> Value {
    let scale = 10f64.powi(RESULT_DECIMALS);
    serde_json::Number::from_f64((v * scale).round() / scale).map_or(Value::Null, Value::Number)
}

/// Writes each figure's value under its metric name into the JSON object at `path` (created if
/// missing), keeping every other key. Fails if the file exists but is not a JSON object, or
/// cannot be written; the file is replaced atomically.
///
/// Each figure's [`Provenance`] goes into [`PROVENANCE_FILE`] beside it, so that results.json
/// stays a flat name -> number object and every number still names the code it measured.
pub fn merge_into_results(path: &Path, figures: &[Figure], provenance: &Provenance) -> Result<(), BenchError> {
    let mut results = read_object(path)?;
    let provenance_path = path.with_file_name(PROVENANCE_FILE);
    let mut provenances = read_object(&provenance_path)?;
    let measured = serde_json::to_value(provenance).map_err(|e| BenchError::Results {
        path: provenance_path.display().to_string(),
        detail: e.to_string(),
    })?;
    for figure in figures {
        results.insert(figure.metric.to_owned(), rounded(figure.value));
        provenances.insert(figure.metric.to_owned(), measured.clone());
    }
    write_object(path, results)?;
    write_object(&provenance_path, provenances)
}

/// The file beside results.json that says where each figure comes from.
pub const PROVENANCE_FILE: &str = "provenance.json";

/// The command a person runs, which `bench/run` passes down; without it, this process's own
/// command line is recorded.
pub const COMMAND_VAR: &str = "FILETRAIL_BENCH_COMMAND";

/// Files a recording run itself changes: they may differ from the commit the figures name.
const RECORDED_FILES: [&str; 2] = ["bench/*.json", "BENCHMARKS.md"];

/// Where a figure was measured: the commit checked out (with no change to its code), when, and
/// by which command.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Provenance {
    pub commit: String,
    /// RFC 3339, UTC.
    pub date: String,
    pub command: String,
}

impl Provenance {
    /// The commit checked out in `repo`, now, and the command ([`COMMAND_VAR`], else this
    /// process's arguments). Fails when tracked files other than the ones a run records differ
    /// from that commit: such figures measure code no commit holds.
    pub fn of_checkout(repo: &Path) -> Result<Self, BenchError> {
        let git = |args: &[&str]| -> Result<String, BenchError> {
            let out =
                Command::new("git")
                    .args(args)
                    .current_dir(repo)
                    .output()
                    .map_err(|e| BenchError::Provenance {
                        detail: format!("cannot run git in {}: {e}", repo.display()),
                        fix: "install git, or pass --no-write",
                    })?;
            if !out.status.success() {
                return Err(BenchError::Provenance {
                    detail: format!(
                        "`git {}` in {} failed: {}",
                        args.join(" "),
                        repo.display(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                    fix: "run the benchmarks in a git checkout of filetrail, or pass --no-write",
                });
            }
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        };
        let commit = git(&["rev-parse", "HEAD"])?;
        // Tracked files that differ from the commit, staged or not.
        let mut diff = vec!["diff", "--name-only", "HEAD", "--", "."];
        let excluded: Vec<String> = RECORDED_FILES.iter().map(|f| format!(":(exclude){f}")).collect();
        diff.extend(excluded.iter().map(String::as_str));
        let changed = git(&diff)?;
        if !changed.is_empty() {
            let files: Vec<&str> = changed.lines().collect();
            return Err(BenchError::Provenance {
                detail: format!("{} differ from commit {commit}", files.join(", ")),
                fix: "commit (or stash) the change first, so the figures name the code they measured, or pass --no-write",
            });
        }
        let command = std::env::var(COMMAND_VAR)
            .ok()
            .filter(|c| !c.trim().is_empty())
            .unwrap_or_else(|| std::env::args().collect::<Vec<_>>().join(" "));
        Ok(Self {
            commit,
            date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            command,
        })
    }
}

fn read_object(path: &Path) -> Result<Map<String, Value>, BenchError> {
    let failed = |detail: String| BenchError::Results {
        path: path.display().to_string(),
        detail,
    };
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Ok(Map::new()),
        Ok(text) => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(failed("it is not a JSON object".to_owned())),
            Err(e) => Err(failed(format!("it is not JSON: {e}"))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Map::new()),
        Err(e) => Err(failed(e.to_string())),
    }
}

fn write_object(path: &Path, object: Map<String, Value>) -> Result<(), BenchError> {
    let failed = |detail: String| BenchError::Results {
        path: path.display().to_string(),
        detail,
    };
    let mut text = serde_json::to_string_pretty(&Value::Object(object)).map_err(|e| failed(e.to_string()))?;
    text.push('\n');
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(|e| failed(format!("writing {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| failed(format!("replacing it: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(metric: &'static str, value: f64, baseline: f64, goal: Option<Goal>) -> Figure {
        Figure {
            metric,
            value,
            baseline,
            baseline_label: "naive".to_owned(),
            goal,
        }
    }

    fn temp_file(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("filetrail-bench-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("results.json")
    }

    fn measured(commit: &str) -> Provenance {
        Provenance {
            commit: commit.to_owned(),
            date: "2026-12-07T12:00:00Z".to_owned(),
            command: "bench/run".to_owned(),
        }
    }

    #[test]
    fn results_merge_keeps_other_keys_and_overwrites_ours_and_says_where_ours_come_from() {
        let path = temp_file("merge");
        std::fs::write(&path, r#"{"hash_mb_per_s": 352, "graph_requests_per_1000_items": 99}"#).unwrap();
        let provenance_path = path.with_file_name(PROVENANCE_FILE);
        std::fs::write(
            &provenance_path,
            r#"{"hash_mb_per_s": {"commit": "old", "date": "2026-11-30T00:00:00Z", "command": "bench/run hash"}}"#,
        )
        .unwrap();
        merge_into_results(
            &path,
            &[figure("graph_requests_per_1000_items", 15.123456, 1000.0, None)],
            &measured("abc123"),
        )
        .unwrap();
        let written: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(written["hash_mb_per_s"], 352);
        assert_eq!(written["graph_requests_per_1000_items"], 15.1235);
        let provenance: Value = serde_json::from_str(&std::fs::read_to_string(&provenance_path).unwrap()).unwrap();
        assert_eq!(provenance["hash_mb_per_s"]["commit"], "old");
        assert_eq!(provenance["graph_requests_per_1000_items"]["commit"], "abc123");
        assert_eq!(provenance["graph_requests_per_1000_items"]["command"], "bench/run");
    }

    fn git(dir: &Path, args: &[&str]) {
        let status = Command::new("git")
            .args(["-c", "user.name=filetrail", "-c", "user.email=bench@filetrail.invalid"])
            .args(args)
            .current_dir(dir)
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    }

    #[test]
    fn figures_name_the_commit_and_refuse_code_no_commit_holds() {
        let repo = temp_file("checkout").with_file_name("repo");
        std::fs::create_dir_all(repo.join("bench")).unwrap();
        git(&repo, &["init", "--quiet"]);
        std::fs::write(repo.join("code.rs"), "fn main() {}\n").unwrap();
        std::fs::write(repo.join("bench/results.json"), "{}\n").unwrap();
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "--quiet", "-m", "code"]);

        // A recording run's own files may differ from the commit.
        std::fs::write(repo.join("bench/results.json"), "{\"x\": 1}\n").unwrap();
        let provenance = Provenance::of_checkout(&repo).unwrap();
        assert_eq!(provenance.commit.len(), 40, "{provenance:?}");
        assert!(
            chrono::DateTime::parse_from_rfc3339(&provenance.date).is_ok(),
            "{provenance:?}"
        );

        // Changed code has no commit to name.
        std::fs::write(repo.join("code.rs"), "fn main() { changed() }\n").unwrap();
        let err = Provenance::of_checkout(&repo).unwrap_err().to_string();
        assert!(err.contains("code.rs") && err.contains("--no-write"), "{err}");
    }

    #[test]
    fn results_file_that_is_not_an_object_is_left_alone() {
        let path = temp_file("array");
        std::fs::write(&path, "[1, 2]").unwrap();
        let err = merge_into_results(&path, &[figure("x", 1.0, 1.0, None)], &measured("c")).unwrap_err();
        assert!(err.to_string().contains("not a JSON object"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "[1, 2]");
    }

    #[test]
    fn table_shows_value_baseline_ratio_and_whether_the_goal_is_met() {
        let table = render_table(&[
            figure(
                "graph_requests_per_discovered_user",
                0.051,
                1.001,
                Some(Goal::AtMost(0.06)),
            ),
            figure("dynamodb_writes_per_1000_items", 75.0, 1000.0, None),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(
            lines[2].contains("0.051") && lines[2].contains("1.001 (naive)"),
            "{table}"
        );
        assert!(
            lines[2].contains("0.0509x") && lines[2].contains("<= 0.06 (met)"),
            "{table}"
        );
        assert!(lines[3].contains("0.075x") && lines[3].ends_with('-'), "{table}");
    }

    #[test]
    fn median_ignores_one_disturbed_pass() {
        assert_eq!(median(&[0.61, 0.95, 0.6, 0.62, 0.59]), 0.61);
        assert_eq!(median(&[1.0, 3.0]), 2.0);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn a_zero_baseline_has_no_ratio() {
        assert!(figure("x", 1.0, 0.0, None).ratio().is_nan());
        assert_eq!(number(f64::NAN), "n/a");
    }
}
