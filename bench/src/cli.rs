//! Command-line options the audit-feed benchmarks share: where the figures go, whether they are
//! written, and which tenant the activity lands in.

use std::path::PathBuf;

use crate::repo_root;
use crate::report::Provenance;

/// Where the figures go and whether they may be written.
#[derive(Debug, Clone, clap::Args)]
pub struct ResultsArgs {
    /// The results file to update (a JSON object, metric name -> number).
    #[arg(long)]
    pub results: Option<PathBuf>,
    /// Print the figures without updating the results file.
    #[arg(long)]
    pub no_write: bool,
    /// Run a debug build anyway (its figures are not written).
    #[arg(long)]
    pub allow_debug: bool,
}

impl ResultsArgs {
    /// `--results`, else `bench/results.json`.
    pub fn path(&self) -> PathBuf {
        self.results
            .clone()
            .unwrap_or_else(|| repo_root().join("bench/results.json"))
    }

    /// Where the figures of this run will be recorded from, checked before the run so that a
    /// long one does not end in a refusal: `None` with `--no-write`, else the checkout's commit
    /// ([`Provenance::of_checkout`] fails when the code differs from it).
    pub fn provenance(&self) -> anyhow::Result<Option<Provenance>> {
        if self.no_write {
            return Ok(None);
        }
        Ok(Some(Provenance::of_checkout(&repo_root())?))
    }

    /// Whether this is a release build. Fails in a debug build without `--allow-debug`, naming
    /// `rerun`, the command that measures in release.
    pub fn release(&self, rerun: &str) -> anyhow::Result<bool> {
        let release = !cfg!(debug_assertions);
        anyhow::ensure!(
            release || self.allow_debug,
            "this is a debug build, whose figures mean nothing; run `{rerun}` (a release build), or pass --allow-debug"
        );
        Ok(release)
    }
}

/// The OneDrives that see activity, and how many of them are monitored.
#[derive(Debug, Clone, clap::Args)]
pub struct TenantArgs {
    /// Users whose OneDrives see activity.
    #[arg(long, default_value_t = 8)]
    pub users: u64,
    /// Of those, how many (the first ones) are in scope: their records get a drive id.
    #[arg(long, default_value_t = 6)]
    pub monitored: u64,
    /// Seed of the tenant and of the activity.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

impl TenantArgs {
    /// Fails unless `1 <= monitored <= users`.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.monitored >= 1 && self.monitored <= self.users,
            "--monitored must be within 1..=--users"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitored_drives_must_be_among_the_users() {
        let tenant = |users, monitored| TenantArgs {
            users,
            monitored,
            seed: 1,
        };
        assert!(tenant(8, 6).check().is_ok());
        assert!(tenant(8, 8).check().is_ok());
        assert!(tenant(8, 0).check().is_err());
        assert!(tenant(8, 9).check().is_err());
    }

    #[test]
    fn figures_go_to_bench_results_json_unless_told_otherwise() {
        let mut output = ResultsArgs {
            results: None,
            no_write: false,
            allow_debug: true,
        };
        assert!(output.path().ends_with("bench/results.json"));
        output.results = Some(PathBuf::from("elsewhere.json"));
        assert_eq!(output.path(), PathBuf::from("elsewhere.json"));
        assert!(output.release("bench/run audit").is_ok());
    }
}
