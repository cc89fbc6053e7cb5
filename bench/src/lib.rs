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
//! This library holds the measuring pieces so they are tested on their own: reading `/proc`
//! ([`procfs`]), running the simulator binary ([`sim_process`]), the baselines ([`baseline`]) and
//! the report ([`report`]).

pub mod baseline;
pub mod error;
pub mod procfs;
pub mod report;
pub mod sim_process;

pub use error::BenchError;
