//! The error of the benchmark library.

/// What can go wrong while measuring. Messages name the file, URL or value at fault and, where
/// one exists, the fix.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A `/proc` file could not be read (benchmarks need Linux).
    #[error("cannot read {path}: {source}; the benchmarks read /proc and run on Linux only")]
    Proc {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A `/proc` file could not be written.
    #[error("cannot write {path}: {source}; resetting the peak RSS needs Linux 4.0 or later")]
    ProcWrite {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A `/proc` file did not have the expected shape.
    #[error("{path}: cannot read {field}: {detail}")]
    ProcFormat {
        path: String,
        field: &'static str,
        detail: String,
    },
    /// The simulator binary did not start or did not announce itself.
    #[error(
        "cannot start the simulator {bin}: {detail}; fix: build it with `cargo build --release -p m365-sim` \
         (bench/run does) or pass --sim-bin"
    )]
    SimStart { bin: String, detail: String },
    /// The simulator's control API answered badly.
    #[error("simulator control API {url}: {detail}")]
    SimHttp { url: String, detail: String },
    /// A Graph request failed (after the client's retries).
    #[error("Graph request failed: {0}")]
    Graph(#[from] filetrail_m365::M365Error),
    /// A delta walk failed.
    #[error("delta walk of drive {drive_id}: {detail}")]
    Delta { drive_id: String, detail: String },
    /// The scope CSV could not be written.
    #[error("cannot write the scope CSV: {0}")]
    Csv(String),
    /// A scope entry resolved to no group.
    #[error("no group matches the scope entry {0}; the benchmark scope must list existing groups only")]
    GroupNotFound(String),
    /// A step on the local stack (moto) failed.
    #[error("{step}: {detail}")]
    Stack { step: String, detail: String },
    /// The results file could not be read or written.
    #[error("results file {path}: {detail}; fix: make it a JSON object (metric name -> number) or delete it")]
    Results { path: String, detail: String },
    /// The checkout cannot name the commit its figures would be recorded against.
    #[error("cannot record figures: {detail}; fix: {fix}")]
    Provenance { detail: String, fix: &'static str },
}
