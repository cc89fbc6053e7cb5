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
