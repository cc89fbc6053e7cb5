//! `audit-bench`: CPU cost of normalising Management Activity API audit blobs into file events
//! (`filetrail_core::audit::normalise_blob`, issue 4), set against parsing the same blobs as
//! JSON and nothing more, in the same run. Prints a table and merges
//! `audit_records_per_cpu_second` into `bench/results.json`. Run it with `bench/run audit`.
//!
//! The corpus: an m365-sim tenant in this process, whose activity injector applies a seeded
//! random mix of activities (uploads, edits, renames, moves, reads, sharing links…) to a few
//! OneDrives and publishes the audit records Microsoft would, grouped into content blobs as the
//! simulator's Management Activity API serves them (normal, late and duplicate blobs). The
//! simulator is stopped before anything is measured; the blob bodies stay in memory.
//!
//! Each pass parses every blob into `Vec<serde_json::Value>` (the baseline), then normalises
//! every blob with the context the ingest builds once it knows the monitored drives, and a
//! third time with the context of the ingest's first pass, which knows none (a diagnostic: the
//! ingest runs both). CPU is this process's user + system time from `/proc/self/stat`, with only
//! the measuring thread at work. Figures are medians over the passes after a warm-up.

use std::hint::black_box;
use std::time::Instant;

use anyhow::{Context as _, ensure};
use chrono::Utc;
use clap::Parser;
use filetrail_bench::audit_feed::{AuditCorpus, audit_corpus};
use filetrail_bench::cli::{ResultsArgs, TenantArgs};
use filetrail_bench::procfs::{self, Pid};
use filetrail_bench::report::{Figure, median, merge_into_results, render_table};
use filetrail_bench::step;
use filetrail_core::audit::{BlobOutcome, NormaliseContext, normalise_blob};

/// Bytes in a MB (10^6), for throughput.
const MB: f64 = 1e6;
/// Fewest activities a recorded run may have: a smaller corpus is a smoke run.
const MIN_RECORDED_OPERATIONS: usize = 100_000;

/// Benchmarks audit-record normalisation against parsing the same blobs as JSON.
#[derive(Debug, Parser)]
#[command(name = "audit-bench")]
struct Args {
    /// Activities injected (records: about 1.2 per activity).
    #[arg(long, default_value_t = 100_000)]
    operations: usize,
    #[command(flatten)]
    tenant: TenantArgs,
    /// Timed passes (after one untimed warm-up pass); figures are medians.
    #[arg(long, default_value_t = 5)]
    passes: usize,
    #[command(flatten)]
    output: ResultsArgs,
}

/// CPU and wall seconds of one measurement.
#[derive(Debug, Clone, Copy)]
struct Cost {
    cpu: f64,
    wall: f64,
}

fn measure<T>(work: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(T, Cost)> {
    let (cpu_before, wall_before) = (procfs::cpu_seconds(Pid::This)?, Instant::now());
    let value = work()?;
    let cost = Cost {
        cpu: procfs::cpu_seconds(Pid::This)? - cpu_before,
        wall: wall_before.elapsed().as_secs_f64(),
    };
    Ok((value, cost))
}

/// Parses every blob as a JSON array of values; returns the number of records.
fn parse_all(corpus: &AuditCorpus) -> anyhow::Result<u64> {
    let mut records = 0;
    for blob in &corpus.blobs {
        let parsed: Vec<serde_json::Value> = serde_json::from_slice(black_box(blob)).context("a blob is not JSON")?;
        records += black_box(parsed).len() as u64;
    }
    Ok(records)
}

/// What normalising every blob gave, summed.
#[derive(Debug, Clone, Default, PartialEq)]
struct Totals {
    records: u64,
    /// Events with a drive id (records of monitored drives).
    events_monitored: u64,
    /// Events without one (records of other OneDrives).
    events_unmonitored: u64,
    skipped: std::collections::BTreeMap<&'static str, u64>,
    quarantined: u64,
}

impl Totals {
    fn add(&mut self, outcome: &BlobOutcome) {
        self.records += outcome.records();
        let monitored = outcome.events.iter().filter(|e| e.drive_id.is_some()).count() as u64;
        self.events_monitored += monitored;
        self.events_unmonitored += outcome.events.len() as u64 - monitored;
        for (code, n) in &outcome.skipped {
            *self.skipped.entry(code).or_default() += n;
        }
        self.quarantined += outcome.quarantined.len() as u64;
    }
}

fn normalise_all(corpus: &AuditCorpus, ctx: &NormaliseContext) -> anyhow::Result<Totals> {
    let mut totals = Totals::default();
    for blob in &corpus.blobs {
        let outcome =
            normalise_blob(black_box(blob), ctx).map_err(|q| anyhow::anyhow!("a blob was quarantined: {q}"))?;
        totals.add(&black_box(outcome));
    }
    Ok(totals)
}

struct Pass {
    parse: Cost,
    normalise: Cost,
    bare: Cost,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let release = args.output.release("bench/run audit")?;
    let provenance = args.output.provenance()?;
    args.tenant.check()?;
    ensure!(args.passes >= 1, "--passes must be at least 1");
    ensure!(args.operations >= 1, "--operations must be at least 1");
    let TenantArgs { users, monitored, seed } = args.tenant;

    step(&format!(
        "injecting {} activities over the OneDrives of {} users (seed {}) in an in-process m365-sim",
        args.operations, users, seed
    ));
    let started = Instant::now();
    let corpus = {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the tokio runtime")?;
        runtime.block_on(audit_corpus(seed, users, monitored, args.operations))?
        // The runtime and the simulator are gone before anything is measured.
    };
    let bytes = corpus.bytes();
    step(&format!(
        "corpus in {:.1} s: {} blobs ({:?}), {} records, {:.1} MB; {} monitored drives, {} not",
        started.elapsed().as_secs_f64(),
        corpus.blobs.len(),
        corpus.blobs_by_lane,
        corpus.records,
        bytes as f64 / MB,
        corpus.monitored.len(),
        corpus.unmonitored
    ));

    let now = Utc::now();
    let (ctx, bare) = (corpus.context(now), corpus.bare_context(now));
    let mut passes = Vec::new();
    let mut expected: Option<Totals> = None;
    for pass in 0..=args.passes {
        let (parsed, parse) = measure(|| parse_all(&corpus))?;
        let (totals, normalise) = measure(|| normalise_all(&corpus, &ctx))?;
        let (bare_totals, bare_cost) = measure(|| normalise_all(&corpus, &bare))?;
        ensure!(
            parsed == corpus.records && totals.records == corpus.records && bare_totals.records == corpus.records,
            "pass {pass}: {parsed} records parsed, {} and {} normalised, the simulator published {}",
            totals.records,
            bare_totals.records,
            corpus.records
        );
        ensure!(
            totals.quarantined == 0,
            "pass {pass}: {} records quarantined; the injector writes only known operations",
            totals.quarantined
        );
        ensure!(
            totals.events_monitored > 0 && bare_totals.events_monitored == 0,
            "pass {pass}: {} events of monitored drives with the drives known, {} without",
            totals.events_monitored,
            bare_totals.events_monitored
        );
        match &expected {
            Some(first) => ensure!(*first == totals, "pass {pass} normalised differently: {totals:?}"),
            None => expected = Some(totals.clone()),
        }
        step(&format!(
            "{} {pass}: parse {:.3} CPU-s | normalise {:.3} CPU-s ({:.3} s wall) | normalise, no drives known {:.3} CPU-s",
            if pass == 0 { "warm-up" } else { "pass" },
            parse.cpu,
            normalise.cpu,
            normalise.wall,
            bare_cost.cpu
        ));
        if pass > 0 {
            passes.push(Pass {
                parse,
                normalise,
                bare: bare_cost,
            });
        }
    }
    let totals = expected.unwrap_or_default();
    let of = |f: fn(&Pass) -> f64| median(&passes.iter().map(f).collect::<Vec<_>>());
    let (parse_cpu, normalise_cpu, bare_cpu) = (of(|p| p.parse.cpu), of(|p| p.normalise.cpu), of(|p| p.bare.cpu));
    ensure!(
        parse_cpu > 0.0 && normalise_cpu > 0.0,
        "a pass took under one clock tick of CPU; use more --operations"
    );
    let records = corpus.records as f64;
    let figure = Figure {
        metric: "audit_records_per_cpu_second",
        value: records / normalise_cpu,
        baseline: records / parse_cpu,
        baseline_label: "serde_json::from_slice::<Vec<Value>> of the same blobs, parse only".to_owned(),
        goal: None,
    };

    println!(
        "\naudit-bench: {} activities over {} OneDrives ({} monitored), seed {}: {} blobs {:?}, {} records, {:.1} MB",
        corpus.operations,
        corpus.monitored.len() + corpus.unmonitored,
        corpus.monitored.len(),
        seed,
        corpus.blobs.len(),
        corpus.blobs_by_lane,
        corpus.records,
        bytes as f64 / MB
    );
    println!(
        "normalised: {} events of monitored drives, {} of other drives, skipped {:?}, {} quarantined\n",
        totals.events_monitored, totals.events_unmonitored, totals.skipped, totals.quarantined
    );
    print!("{}", render_table(std::slice::from_ref(&figure)));
    println!(
        "\nmedians of {} passes: parse {:.3} CPU-s ({:.0} MB/s, {:.2} us/record); normalise {:.3} CPU-s ({:.0} MB/s, {:.2} us/record); \
         normalise without known drives (the ingest's first pass) {:.3} CPU-s ({:.0} records/CPU-s)",
        passes.len(),
        parse_cpu,
        bytes as f64 / MB / parse_cpu,
        parse_cpu / records * 1e6,
        normalise_cpu,
        bytes as f64 / MB / normalise_cpu,
        normalise_cpu / records * 1e6,
        bare_cpu,
        records / bare_cpu
    );
    println!(
        "per pass (CPU-s): parse {:?}; normalise {:?}",
        passes.iter().map(|p| round3(p.parse.cpu)).collect::<Vec<_>>(),
        passes.iter().map(|p| round3(p.normalise.cpu)).collect::<Vec<_>>()
    );

    let Some(provenance) = provenance.filter(|_| release) else {
        println!("\nresults not written (--no-write or a debug build)");
        return Ok(());
    };
    if args.operations < MIN_RECORDED_OPERATIONS {
        println!("\nresults not written: under {MIN_RECORDED_OPERATIONS} activities is a smoke run, not a benchmark");
        return Ok(());
    }
    let results_path = args.output.path();
    merge_into_results(&results_path, &[figure], &provenance)?;
    println!("\nupdated {}", results_path.display());
    Ok(())
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
