//! Benchmarks of filetrail's walking skeleton (discovery and indexing) on the local stack: moto
//! server as AWS and the `m365-sim` release binary as Microsoft 365, both in processes of their
//! own, with the real handlers driven by the local runner in the benchmark process.
//!
//! The `pipeline-bench` binary (run it with `bench/run`) measures, each against a baseline
//! measured in the same run:
//! - Graph requests per discovered user (vs. one `GET /users/{id}/drive` per user),
//! - Graph requests per 1,000 indexed items,
//! - DynamoDB write requests per 1,000 items (vs. one `PutItem` per item),
//! - CPU seconds of the pipeline process per 100,000 items (vs. fetching and parsing the same
//!   delta walks without storing anything),
//! - peak RSS of the simulator serving a 1,000,000-user directory (vs. the same process idle).
//!
//! The `scope-bench` binary (`bench/run scope`) measures discovery of a groups scope (1,000
//! groups, ~200,000 users): Graph requests (vs. a naive resolution without `$batch`), wall time
//! and the peak RSS of the process running discovery (vs. its RSS before).
//!
//! The `audit-bench` binary (`bench/run audit`) measures the CPU cost of normalising audit
//! blobs (vs. parsing them as JSON); `activity-bench` (`bench/run activity`) the time from a
//! blob becoming available to its events being queryable, on the local stack (vs. the poll
//! period). Their pieces are in [`audit_feed`].
//!
//! This library holds the measuring pieces so they are tested on their own: reading `/proc`
//! ([`procfs`]), running the simulator binary ([`sim_process`]), the baselines ([`baseline`]),
//! the scope's ground truth and request models ([`scope`]), the local stack ([`stack`]), port
//! wrappers that time each call ([`timed`]) and the report ([`report`]).

pub mod audit_feed;
pub mod baseline;
pub mod cli;
pub mod error;
pub mod procfs;
pub mod report;
pub mod scope;
pub mod sim_process;
pub mod stack;
pub mod timed;

pub use error::BenchError;

use std::path::{Path, PathBuf};

/// The repository root (this crate lives in `bench/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Prints one step of a benchmark run to stderr, with the time of day.
pub fn step(text: &str) {
    eprintln!("[{}] {text}", chrono::Utc::now().format("%H:%M:%S"));
}
