//! Runs functions on one machine the way AWS wires them: each `SQS` event of a template function
//! becomes a poller that behaves like Lambda's event-source mapping, and each `Schedule` event a
//! timer (or an on-demand trigger) that invokes the function with the schedule's constant input.
//!
//! What the pollers reproduce, because handlers depend on it:
//! - `ReceiveMessage` with `MaxNumberOfMessages = BatchSize`, the queue's visibility timeout and
//!   long polling, requesting every system attribute;
//! - the Lambda SQS event JSON (`Records[]` with `messageId`, `receiptHandle`, `body`,
//!   `attributes`, `messageAttributes`, `md5OfBody`, `eventSource`, `eventSourceARN`, `awsRegion`);
//! - the invocation deadline (the function's `Timeout`, or a shorter override): past it the
//!   invocation is dropped like a timed-out Lambda;
//! - partial batch responses (`ReportBatchItemFailures`): only the messages not reported as failed
//!   are deleted; an error, a panic, a timeout or an invalid response deletes none, so the batch
//!   comes back after the visibility timeout and, after `maxReceiveCount` receives, the queue's
//!   redrive policy moves it to the dead-letter queue.
//!
//! Not emulated: batching windows (one receive per batch), FIFO ordering per message group, and
//! the retries Lambda makes of a failed asynchronous (schedule) invocation.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName, QueueAttributeName};
use filetrail_aws::provision::Provisioned;
use filetrail_aws::template::{EventSpec, FunctionSpec, ScheduleExpression, Template};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// Longest long-poll wait SQS accepts (`ReceiveMessage` `WaitTimeSeconds`: 0 to 20).
pub const MAX_RECEIVE_WAIT: Duration = Duration::from_secs(20);
/// Most messages one `ReceiveMessage` returns (`MaxNumberOfMessages`: 1 to 10).
pub const MAX_RECEIVE_BATCH: u32 = 10;
/// Longest visibility timeout SQS accepts (12 hours, `ReceiveMessage` `VisibilityTimeout`).
pub const MAX_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(43_200);
/// Functions invoked at once per function unless overridden.
pub const DEFAULT_CONCURRENCY: usize = 2;
/// Default long-poll wait locally: short, so stopping and idle detection are quick.
pub const DEFAULT_RECEIVE_WAIT: Duration = Duration::from_secs(1);
/// How often the idle check looks at the queues.
const IDLE_CHECK_INTERVAL: Duration = Duration::from_millis(200);
/// Pause after a failed `ReceiveMessage` before polling again.
const RECEIVE_ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// A function the runner can invoke: the same handler code the Lambda runs, without the Lambda
/// runtime around it.
#[async_trait::async_trait]
pub trait LocalFunction: Send + Sync {
    /// Invoked with the exact JSON Lambda would pass (an SQS event `{"Records":[…]}` or a
    /// schedule's constant Input) and the invocation deadline; returns the JSON the function
    /// returns (for SQS: `{"batchItemFailures":[{"itemIdentifier": messageId}]}`).
    async fn invoke(&self, payload: Value, deadline: Instant) -> anyhow::Result<Value>;
}

/// Every function of template.yaml runs locally as it runs in Lambda.
#[async_trait::async_trait]
impl<F: filetrail_runtime::Function> LocalFunction for F {
    async fn invoke(&self, payload: Value, deadline: Instant) -> anyhow::Result<Value> {
        filetrail_runtime::Function::invoke(self, payload, deadline).await
    }
}

/// How `Schedule` events fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScheduleMode {
    /// Each `rate(…)` schedule fires once when [`Runner::run`] starts and then at its rate, as
    /// EventBridge would. `cron(…)` schedules fire only on demand.
    #[default]
    Emulate,
    /// Schedules fire only through [`Runner::fire_schedule`].
    OnDemand,
}

/// Where an invocation came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvocationSource {
    /// An SQS event-source mapping on this queue (logical id).
    Queue(String),
    /// A `Schedule` event (its name in the template).
    Schedule(String),
}

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvocationOutcome {
    /// Returned; every message of the batch was deleted.
    Succeeded,
    /// Returned a partial batch response; the reported messages stay on the queue.
    PartiallyFailed,
    /// Returned an error, or a response Lambda treats as a complete failure.
    Failed(String),
    /// Still running at its deadline; dropped.
    TimedOut,
    /// Panicked.
    Panicked(String),
    /// Dropped because the runner was killed.
    Killed,
}

impl std::fmt::Display for InvocationOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Succeeded => f.write_str("succeeded"),
            Self::PartiallyFailed => f.write_str("partially failed"),
            Self::Failed(e) => write!(f, "failed: {e}"),
            Self::TimedOut => f.write_str("timed out"),
            Self::Panicked(m) => write!(f, "panicked: {m}"),
            Self::Killed => f.write_str("killed"),
        }
    }
}

/// Progress, for the CLI's progress bars and for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerEvent {
    /// An invocation started with this many SQS messages (0 for a schedule).
    Invoked {
        function: String,
        source: InvocationSource,
        messages: usize,
    },
    /// An invocation ended: `deleted` messages were removed from the queue, `failed` stay on it.
    Finished {
        function: String,
        source: InvocationSource,
        deleted: usize,
        failed: usize,
        outcome: InvocationOutcome,
    },
    /// `ReceiveMessage` failed (the poller retries after a pause).
    ReceiveFailed {
        function: String,
        queue: String,
        error: String,
    },
}

/// Receives every [`RunnerEvent`]; called from the runner's tasks, so keep it quick.
pub type EventSink = Arc<dyn Fn(&RunnerEvent) + Send + Sync>;

/// How the runner behaves. `Default` mirrors AWS except for a 1 s long-poll wait.
#[derive(Clone)]
pub struct RunnerOptions {
    /// Deadline of each invocation. `None`: the function's template `Timeout`.
    pub invocation_timeout: Option<Duration>,
    /// Visibility timeout of received messages. `None`: the queue's `VisibilityTimeout`, scaled
    /// down in proportion when `invocation_timeout` shortens the function's timeout (so the
    /// template's 6× ratio holds), and at least 1 s.
    pub visibility_timeout: Option<Duration>,
    pub schedules: ScheduleMode,
    /// Long-poll wait of each `ReceiveMessage` (whole seconds, at most 20).
    pub receive_wait: Duration,
    /// Invocations of one function running at once (further capped per mapping by its
    /// `ScalingConfig.MaximumConcurrency`).
    pub concurrency: usize,
    /// Stop [`Runner::run`] once every mapped queue has had no visible, in-flight or delayed
    /// message and no invocation has run for this long.
    pub until_idle: Option<Duration>,
    /// Kill the run once this many invocations have finished: invocations still running are
    /// dropped without deleting their messages, as if the process had died.
    pub abort_after_invocations: Option<u64>,
    pub on_event: Option<EventSink>,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        Self {
            invocation_timeout: None,
            visibility_timeout: None,
            schedules: ScheduleMode::default(),
            receive_wait: DEFAULT_RECEIVE_WAIT,
            concurrency: DEFAULT_CONCURRENCY,
            until_idle: None,
            abort_after_invocations: None,
            on_event: None,
        }
    }
}

impl std::fmt::Debug for RunnerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerOptions")
            .field("invocation_timeout", &self.invocation_timeout)
            .field("visibility_timeout", &self.visibility_timeout)
            .field("schedules", &self.schedules)
            .field("receive_wait", &self.receive_wait)
            .field("concurrency", &self.concurrency)
            .field("until_idle", &self.until_idle)
            .field("abort_after_invocations", &self.abort_after_invocations)
            .field("on_event", &self.on_event.as_ref().map(|_| "…"))
            .finish()
    }
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `until_idle`: every mapped queue drained and nothing ran for the quiet period.
    Idle,
    /// [`RunnerHandle::stop`]: running invocations finished first.
    Stopped,
    /// [`RunnerHandle::kill`]: running invocations were dropped.
    Killed,
    /// `abort_after_invocations` was reached; running invocations were dropped.
    AbortedAfterInvocations,
}

/// Counters of a run (or, from [`Runner::stats`], of the runner's whole life).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunStats {
    pub invocations: u64,
    /// Invocations that did not succeed completely (partial failures included).
    pub failed_invocations: u64,
    pub messages_received: u64,
    pub messages_deleted: u64,
    /// Messages left on their queue after an invocation (to be received again).
    pub messages_failed: u64,
}

/// What [`Runner::run`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunReport {
    pub reason: StopReason,
    pub stats: RunStats,
}

/// Why the runner could not be built or an on-demand invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("function `{function}` is not in template.yaml (its functions: {known})")]
    UnknownFunction { function: String, known: String },
    #[error(
        "{function}: queue `{queue}` of event `{event}` was not provisioned (fix: provision template.yaml first, \
         `filetrail local provision`)"
    )]
    QueueNotProvisioned {
        function: String,
        event: String,
        queue: String,
    },
    #[error("{function} has no enabled Schedule event in template.yaml")]
    NoSchedule { function: String },
    #[error("{function} ({trigger}) {outcome}")]
    Invocation {
        function: String,
        /// `schedule <event name>`.
        trigger: String,
        outcome: InvocationOutcome,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Run,
    Stop(StopReason),
    Kill(StopReason),
}

/// Stops or kills a running [`Runner::run`] from elsewhere (a Ctrl-C handler, a test).
#[derive(Clone)]
pub struct RunnerHandle {
    control: watch::Sender<Control>,
}

impl RunnerHandle {
    /// Stops polling and schedules; running invocations finish and their results are applied.
    pub fn stop(&self) {
        self.set(Control::Stop(StopReason::Stopped));
    }

    /// Stops at once: running invocations are dropped and their messages are not deleted (they
    /// reappear after their visibility timeout), as when a Lambda worker dies.
    pub fn kill(&self) {
        self.set(Control::Kill(StopReason::Killed));
    }

    fn set(&self, to: Control) {
        self.control.send_if_modified(|current| {
            let escalate = matches!((*current, to), (Control::Run, _) | (Control::Stop(_), Control::Kill(_)));
            if escalate {
                *current = to;
            }
            escalate
        });
    }
}

struct Mapping {
    event: String,
    queue: String,
    queue_url: String,
    queue_arn: String,
    batch_size: u32,
    report_batch_item_failures: bool,
    visibility: Duration,
    pollers: usize,
}

struct Schedule {
    event: String,
    expression: ScheduleExpression,
    input: Value,
}

struct Wired {
    id: String,
    function: Arc<dyn LocalFunction>,
    timeout: Duration,
    semaphore: Arc<Semaphore>,
    mappings: Vec<Mapping>,
    schedules: Vec<Schedule>,
}

#[derive(Default)]
struct Counters {
    invocations: AtomicU64,
    failed_invocations: AtomicU64,
    messages_received: AtomicU64,
    messages_deleted: AtomicU64,
    messages_failed: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> RunStats {
        RunStats {
            invocations: self.invocations.load(Ordering::SeqCst),
            failed_invocations: self.failed_invocations.load(Ordering::SeqCst),
            messages_received: self.messages_received.load(Ordering::SeqCst),
            messages_deleted: self.messages_deleted.load(Ordering::SeqCst),
            messages_failed: self.messages_failed.load(Ordering::SeqCst),
        }
    }
}

struct Inner {
    sqs: aws_sdk_sqs::Client,
    region: String,
    functions: BTreeMap<String, Wired>,
    options: RunnerOptions,
    control: watch::Sender<Control>,
    /// Invocations running, plus batches received and not yet settled.
    in_flight: AtomicUsize,
    /// Invocations finished in the current run (for `abort_after_invocations`).
    finished_in_run: AtomicU64,
    counters: Counters,
}

/// The local stand-in for Lambda's event-source mappings and EventBridge schedules.
#[derive(Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

impl Runner {
    /// Wires each function in `functions` (by template logical id) to its template events. Fails
    /// if a key is not a template function or a mapped queue was not provisioned. Template
    /// functions without an implementation are left out (logged), and so are event types other
    /// than `SQS` and `Schedule`.
    pub fn new(
        sdk: &SdkConfig,
        template: &Template,
        provisioned: &Provisioned,
        functions: HashMap<String, Arc<dyn LocalFunction>>,
        options: RunnerOptions,
    ) -> Result<Runner, RunnerError> {
        let known = || template.functions.keys().cloned().collect::<Vec<_>>().join(", ");
        let mut wired = BTreeMap::new();
        for (id, function) in functions {
            let spec = template
                .functions
                .get(&id)
                .ok_or_else(|| RunnerError::UnknownFunction {
                    function: id.clone(),
                    known: known(),
                })?;
            wired.insert(id.clone(), wire(spec, function, template, provisioned, &options)?);
        }
        for id in template.functions.keys().filter(|id| !wired.contains_key(*id)) {
            tracing::warn!(function = %id, "no local implementation; its events are not emulated");
        }
        let (control, _) = watch::channel(Control::Run);
        Ok(Runner {
            inner: Arc::new(Inner {
                sqs: aws_sdk_sqs::Client::new(sdk),
                region: provisioned.region.clone(),
                functions: wired,
                options,
                control,
                in_flight: AtomicUsize::new(0),
                finished_in_run: AtomicU64::new(0),
                counters: Counters::default(),
            }),
        })
    }

    /// A handle to stop or kill [`Runner::run`].
    pub fn handle(&self) -> RunnerHandle {
        RunnerHandle {
            control: self.inner.control.clone(),
        }
    }

    /// Counters since the runner was built.
    pub fn stats(&self) -> RunStats {
        self.inner.counters.snapshot()
    }

    /// Polls every mapped queue (and, with [`ScheduleMode::Emulate`], fires schedules) until
    /// the run is idle (`until_idle`), stopped or killed through a [`RunnerHandle`], or
    /// `abort_after_invocations` is reached. Without `until_idle` it runs until stopped.
    /// A stop or kill issued before `run` starts is cleared. Returns the run's counters.
    pub async fn run(&self) -> RunReport {
        let inner = &self.inner;
        inner.control.send_replace(Control::Run);
        inner.finished_in_run.store(0, Ordering::SeqCst);
        let before = inner.counters.snapshot();

        let mut tasks = JoinSet::new();
        for wired in inner.functions.values() {
            for (index, mapping) in wired.mappings.iter().enumerate() {
                for _ in 0..mapping.pollers {
                    tasks.spawn(poll_loop(Arc::clone(inner), wired.id.clone(), index));
                }
            }
            if inner.options.schedules == ScheduleMode::Emulate {
                for (index, schedule) in wired.schedules.iter().enumerate() {
                    match schedule.expression {
                        ScheduleExpression::Rate(every) => {
                            // Counted as running from now, so the idle check cannot pass before
                            // the first firing starts.
                            inner.in_flight.fetch_add(1, Ordering::SeqCst);
                            tasks.spawn(schedule_loop(Arc::clone(inner), wired.id.clone(), index, every));
                        }
                        ScheduleExpression::Cron(ref cron) => tracing::warn!(
                            function = %wired.id,
                            schedule = %cron,
                            "cron schedules are not emulated; fire them with fire_schedule"
                        ),
                    }
                }
            }
        }

        let reason = self.watch_until_done().await;
        // Make every task see the end: a graceful stop lets running invocations finish.
        match reason {
            StopReason::Idle | StopReason::Stopped => self.handle().set(Control::Stop(reason)),
            StopReason::Killed | StopReason::AbortedAfterInvocations => self.handle().set(Control::Kill(reason)),
        }
        while let Some(joined) = tasks.join_next().await {
            if let Err(e) = joined {
                tracing::error!(error = %e, "a runner task failed");
            }
        }
        let after = inner.counters.snapshot();
        RunReport {
            reason,
            stats: RunStats {
                invocations: after.invocations - before.invocations,
                failed_invocations: after.failed_invocations - before.failed_invocations,
                messages_received: after.messages_received - before.messages_received,
                messages_deleted: after.messages_deleted - before.messages_deleted,
                messages_failed: after.messages_failed - before.messages_failed,
            },
        }
    }

    async fn watch_until_done(&self) -> StopReason {
        let mut control = self.inner.control.subscribe();
        let mut idle_since: Option<tokio::time::Instant> = None;
        loop {
            match *control.borrow_and_update() {
                Control::Run => {}
                Control::Stop(reason) | Control::Kill(reason) => return reason,
            }
            let Some(quiet) = self.inner.options.until_idle else {
                if control.changed().await.is_err() {
                    return StopReason::Stopped;
                }
                continue;
            };
            tokio::select! {
                changed = control.changed() => if changed.is_err() { return StopReason::Stopped },
                () = tokio::time::sleep(IDLE_CHECK_INTERVAL) => {
                    if self.is_idle().await {
                        let since = *idle_since.get_or_insert_with(tokio::time::Instant::now);
                        if since.elapsed() >= quiet {
                            return StopReason::Idle;
                        }
                    } else {
                        idle_since = None;
                    }
                }
            }
        }
    }

    /// No invocation running and every mapped queue empty (visible, in flight and delayed).
    async fn is_idle(&self) -> bool {
        if self.inner.in_flight.load(Ordering::SeqCst) > 0 {
            return false;
        }
        let urls: BTreeSet<&str> = self
            .inner
            .functions
            .values()
            .flat_map(|w| w.mappings.iter().map(|m| m.queue_url.as_str()))
            .collect();
        for url in urls {
            match queue_depth(&self.inner.sqs, url).await {
                Ok(0) => {}
                Ok(_) => return false,
                Err(e) => {
                    tracing::warn!(queue = url, error = %e, "cannot read queue depth");
                    return false;
                }
            }
        }
        self.inner.in_flight.load(Ordering::SeqCst) == 0
    }

    /// Invokes `function` once with the constant input of each of its enabled `Schedule` events,
    /// as EventBridge would, within its timeout and concurrency. Returns what each invocation
    /// returned, in event-name order; fails with [`RunnerError::Invocation`] if one did not
    /// succeed, or if the function has no schedule.
    pub async fn fire_schedule(&self, function: &str) -> Result<Vec<Value>, RunnerError> {
        let wired = self
            .inner
            .functions
            .get(function)
            .ok_or_else(|| RunnerError::UnknownFunction {
                function: function.to_owned(),
                known: self.inner.functions.keys().cloned().collect::<Vec<_>>().join(", "),
            })?;
        if wired.schedules.is_empty() {
            return Err(RunnerError::NoSchedule {
                function: function.to_owned(),
            });
        }
        let mut results = Vec::with_capacity(wired.schedules.len());
        for schedule in &wired.schedules {
            // During a run, a kill drops this invocation too; outside one (even after a killed
            // run) nothing can.
            let control = if *self.inner.control.borrow() == Control::Run {
                self.inner.control.subscribe()
            } else {
                watch::channel(Control::Run).1
            };
            self.inner.in_flight.fetch_add(1, Ordering::SeqCst);
            let (outcome, value) = fire(&self.inner, wired, schedule, control).await;
            match (outcome, value) {
                (InvocationOutcome::Succeeded, Some(value)) => results.push(value),
                (outcome, _) => {
                    return Err(RunnerError::Invocation {
                        function: function.to_owned(),
                        trigger: format!("schedule {}", schedule.event),
                        outcome,
                    });
                }
            }
        }
        Ok(results)
    }
}

fn wire(
    spec: &FunctionSpec,
    function: Arc<dyn LocalFunction>,
    template: &Template,
    provisioned: &Provisioned,
    options: &RunnerOptions,
) -> Result<Wired, RunnerError> {
    let timeout = options.invocation_timeout.unwrap_or_else(|| spec.timeout());
    let concurrency = options.concurrency.max(1);
    let mut mappings = Vec::new();
    let mut schedules = Vec::new();
    for (event, spec_event) in &spec.events {
        match spec_event {
            EventSpec::Sqs {
                queue,
                batch_size,
                report_batch_item_failures,
                maximum_concurrency,
                enabled,
                ..
            } => {
                if !enabled {
                    continue;
                }
                let not_provisioned = || RunnerError::QueueNotProvisioned {
                    function: spec.logical_id.clone(),
                    event: event.clone(),
                    queue: queue.clone(),
                };
                let physical = provisioned.resource(queue).ok_or_else(not_provisioned)?;
                let queue_url = physical.url.clone().ok_or_else(not_provisioned)?;
                let queue_visibility = template
                    .queues
                    .get(queue)
                    .map(|q| Duration::from_secs(u64::from(q.visibility_timeout_secs)))
                    .ok_or_else(not_provisioned)?;
                let visibility = options
                    .visibility_timeout
                    .unwrap_or_else(|| match options.invocation_timeout {
                        Some(t) if spec.timeout() > Duration::ZERO => {
                            queue_visibility.mul_f64(t.as_secs_f64() / spec.timeout().as_secs_f64())
                        }
                        _ => queue_visibility,
                    });
                let visibility = visibility.clamp(Duration::from_secs(1), MAX_VISIBILITY_TIMEOUT);
                let pollers = maximum_concurrency.map_or(concurrency, |m| concurrency.min(m as usize));
                mappings.push(Mapping {
                    event: event.clone(),
                    queue: queue.clone(),
                    queue_url,
                    queue_arn: physical.arn.clone(),
                    batch_size: (*batch_size).clamp(1, MAX_RECEIVE_BATCH),
                    report_batch_item_failures: *report_batch_item_failures,
                    visibility,
                    pollers: pollers.max(1),
                });
            }
            EventSpec::Schedule {
                schedule,
                input,
                enabled,
            } => {
                if *enabled {
                    schedules.push(Schedule {
                        event: event.clone(),
                        expression: schedule.clone(),
                        input: input.clone().unwrap_or(Value::Null),
                    });
                }
            }
            EventSpec::Other { kind } => {
                tracing::warn!(function = %spec.logical_id, event = %event, kind = %kind, "event type not emulated locally");
            }
        }
    }
    Ok(Wired {
        id: spec.logical_id.clone(),
        function,
        timeout,
        semaphore: Arc::new(Semaphore::new(concurrency)),
        mappings,
        schedules,
    })
}

/// Visible + in-flight + delayed messages of a queue.
async fn queue_depth(sqs: &aws_sdk_sqs::Client, url: &str) -> anyhow::Result<u64> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{}", aws_sdk_sqs::error::DisplayErrorContext(&e)))?;
    Ok(out
        .attributes
        .unwrap_or_default()
        .values()
        .filter_map(|v| v.parse::<u64>().ok())
        .sum())
}

fn emit(inner: &Inner, event: RunnerEvent) {
    if let Some(sink) = &inner.options.on_event {
        sink(&event);
    }
}

/// Resolves when the runner is killed; never when it is merely stopped.
async fn killed(control: &mut watch::Receiver<Control>) {
    loop {
        if matches!(*control.borrow_and_update(), Control::Kill(_)) {
            return;
        }
        if control.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Resolves when the runner leaves the `Run` state.
async fn ended(control: &mut watch::Receiver<Control>) {
    loop {
        if *control.borrow_and_update() != Control::Run {
            return;
        }
        if control.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

enum Invocation {
    Returned(Value),
    Failed(String),
    Panicked(String),
    TimedOut,
    Killed,
}

/// Runs one invocation on its own task, so a panic is caught and a timeout or kill can drop it.
async fn invoke_guarded(
    function: Arc<dyn LocalFunction>,
    payload: Value,
    timeout: Duration,
    control: &mut watch::Receiver<Control>,
) -> Invocation {
    let deadline = Instant::now() + timeout;
    let mut task = tokio::spawn(async move { function.invoke(payload, deadline).await });
    tokio::select! {
        joined = &mut task => match joined {
            Ok(Ok(value)) => Invocation::Returned(value),
            Ok(Err(e)) => Invocation::Failed(format!("{e:#}")),
            Err(e) if e.is_panic() => {
                let panic = e.into_panic();
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".to_owned());
                Invocation::Panicked(message)
            }
            Err(e) => Invocation::Failed(e.to_string()),
        },
        () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
            task.abort();
            Invocation::TimedOut
        }
        () = killed(control) => {
            task.abort();
            Invocation::Killed
        }
    }
}

/// The messages Lambda leaves on the queue after an invocation, per its partial batch response
/// rules (Lambda developer guide, "Implementing partial batch responses"): an empty or null
/// response or `batchItemFailures` is complete success; an unparsable response, or an
/// `itemIdentifier` that is missing, empty, or not a message of the batch, is complete failure.
fn failed_messages(
    invocation: &Invocation,
    report_batch_item_failures: bool,
    batch_ids: &[String],
) -> (BTreeSet<String>, InvocationOutcome) {
    let all = || batch_ids.iter().cloned().collect::<BTreeSet<_>>();
    let value = match invocation {
        Invocation::Returned(value) => value,
        Invocation::Failed(e) => return (all(), InvocationOutcome::Failed(e.clone())),
        Invocation::Panicked(m) => return (all(), InvocationOutcome::Panicked(m.clone())),
        Invocation::TimedOut => return (all(), InvocationOutcome::TimedOut),
        Invocation::Killed => return (all(), InvocationOutcome::Killed),
    };
    if !report_batch_item_failures {
        return (BTreeSet::new(), InvocationOutcome::Succeeded);
    }
    let failures = match value {
        Value::Null => return (BTreeSet::new(), InvocationOutcome::Succeeded),
        Value::Object(map) => match map.get("batchItemFailures") {
            None | Some(Value::Null) => return (BTreeSet::new(), InvocationOutcome::Succeeded),
            Some(Value::Array(items)) => items,
            Some(other) => {
                return (
                    all(),
                    InvocationOutcome::Failed(format!("batchItemFailures is not a list: {other}")),
                );
            }
        },
        other => {
            return (
                all(),
                InvocationOutcome::Failed(format!("invalid batch response: {other}")),
            );
        }
    };
    let mut failed = BTreeSet::new();
    for item in failures {
        match item.get("itemIdentifier").and_then(Value::as_str) {
            Some(id) if !id.is_empty() && batch_ids.iter().any(|b| b == id) => {
                failed.insert(id.to_owned());
            }
            _ => {
                return (
                    all(),
                    InvocationOutcome::Failed(format!("invalid batch item failure: {item}")),
                );
            }
        }
    }
    if failed.is_empty() {
        (failed, InvocationOutcome::Succeeded)
    } else {
        (failed, InvocationOutcome::PartiallyFailed)
    }
}

/// One record of the Lambda SQS event, as Lambda builds it from a received message.
fn lambda_record(message: &Message, queue_arn: &str, region: &str) -> Value {
    let attributes: serde_json::Map<String, Value> = message
        .attributes()
        .map(|a| {
            a.iter()
                .map(|(k, v)| (k.as_str().to_owned(), Value::String(v.clone())))
                .collect()
        })
        .unwrap_or_default();
    let base64 = |blob: &aws_sdk_sqs::primitives::Blob| {
        let mut data = aws_lambda_events::encodings::Base64Data::default();
        data.0 = blob.as_ref().to_vec();
        serde_json::to_value(data).unwrap_or(Value::Null)
    };
    let message_attributes: serde_json::Map<String, Value> = message
        .message_attributes()
        .map(|a| {
            a.iter()
                .map(|(name, v)| {
                    let value = json!({
                        "stringValue": v.string_value(),
                        "binaryValue": v.binary_value().map(base64),
                        "stringListValues": v.string_list_values(),
                        "binaryListValues": v.binary_list_values().iter().map(base64).collect::<Vec<_>>(),
                        "dataType": v.data_type(),
                    });
                    (name.clone(), value)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut record = json!({
        "messageId": message.message_id(),
        "receiptHandle": message.receipt_handle(),
        "body": message.body(),
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": message.md5_of_body(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    });
    if let (Some(md5), Some(obj)) = (message.md5_of_message_attributes(), record.as_object_mut()) {
        obj.insert("md5OfMessageAttributes".to_owned(), Value::String(md5.to_owned()));
    }
    record
}

async fn poll_loop(inner: Arc<Inner>, function: String, mapping_index: usize) {
    let Some(wired) = inner.functions.get(&function) else {
        return;
    };
    let Some(mapping) = wired.mappings.get(mapping_index) else {
        return;
    };
    let mut control = inner.control.subscribe();
    let wait_secs = inner.options.receive_wait.min(MAX_RECEIVE_WAIT).as_secs();
    loop {
        if *control.borrow_and_update() != Control::Run {
            return;
        }
        let permit = tokio::select! {
            permit = Arc::clone(&wired.semaphore).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            () = ended(&mut control) => return,
        };
        let receive = inner
            .sqs
            .receive_message()
            .queue_url(&mapping.queue_url)
            .max_number_of_messages(mapping.batch_size as i32)
            .visibility_timeout(mapping.visibility.as_secs() as i32)
            .wait_time_seconds(wait_secs as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send();
        // A graceful stop lets an outstanding receive finish (its messages are then processed);
        // a kill drops it, like a dying poller.
        let received = tokio::select! {
            r = receive => r,
            () = killed(&mut control) => return,
        };
        let messages = match received {
            Ok(out) => out.messages.unwrap_or_default(),
            Err(e) => {
                let error = aws_sdk_sqs::error::DisplayErrorContext(&e).to_string();
                tracing::warn!(function = %function, queue = %mapping.queue, error = %error, "ReceiveMessage failed");
                emit(
                    &inner,
                    RunnerEvent::ReceiveFailed {
                        function: function.clone(),
                        queue: mapping.queue.clone(),
                        error,
                    },
                );
                drop(permit);
                tokio::select! {
                    () = tokio::time::sleep(RECEIVE_ERROR_BACKOFF) => continue,
                    () = ended(&mut control) => return,
                }
            }
        };
        if messages.is_empty() {
            continue;
        }
        inner.in_flight.fetch_add(1, Ordering::SeqCst);
        process_batch(&inner, wired, mapping, messages, &mut control).await;
        inner.in_flight.fetch_sub(1, Ordering::SeqCst);
        drop(permit);
        finished_one(&inner);
    }
}

async fn process_batch(
    inner: &Inner,
    wired: &Wired,
    mapping: &Mapping,
    messages: Vec<Message>,
    control: &mut watch::Receiver<Control>,
) {
    let source = InvocationSource::Queue(mapping.queue.clone());
    let ids: Vec<String> = messages
        .iter()
        .map(|m| m.message_id().unwrap_or_default().to_owned())
        .collect();
    let records: Vec<Value> = messages
        .iter()
        .map(|m| lambda_record(m, &mapping.queue_arn, &inner.region))
        .collect();
    inner.counters.invocations.fetch_add(1, Ordering::SeqCst);
    inner
        .counters
        .messages_received
        .fetch_add(messages.len() as u64, Ordering::SeqCst);
    emit(
        inner,
        RunnerEvent::Invoked {
            function: wired.id.clone(),
            source: source.clone(),
            messages: messages.len(),
        },
    );
    tracing::debug!(function = %wired.id, queue = %mapping.queue, event = %mapping.event, messages = messages.len(), "invoking");

    let invocation = invoke_guarded(
        Arc::clone(&wired.function),
        json!({ "Records": records }),
        wired.timeout,
        control,
    )
    .await;
    let (failed, outcome) = failed_messages(&invocation, mapping.report_batch_item_failures, &ids);

    let to_delete: Vec<DeleteMessageBatchRequestEntry> = messages
        .iter()
        .enumerate()
        .filter(|(_, m)| !failed.contains(m.message_id().unwrap_or_default()))
        .filter_map(|(i, m)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .set_receipt_handle(m.receipt_handle().map(str::to_owned))
                .build()
                .ok()
        })
        .collect();
    let mut deleted = to_delete.len();
    if !to_delete.is_empty() {
        match inner
            .sqs
            .delete_message_batch()
            .queue_url(&mapping.queue_url)
            .set_entries(Some(to_delete))
            .send()
            .await
        {
            Ok(out) => {
                for failure in out.failed() {
                    tracing::warn!(queue = %mapping.queue, code = failure.code(), "could not delete a processed message; it will be redelivered");
                }
                deleted -= out.failed().len();
            }
            Err(e) => {
                tracing::warn!(queue = %mapping.queue, error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "DeleteMessageBatch failed; the batch will be redelivered");
                deleted = 0;
            }
        }
    }
    let left = messages.len() - deleted;
    inner
        .counters
        .messages_deleted
        .fetch_add(deleted as u64, Ordering::SeqCst);
    inner.counters.messages_failed.fetch_add(left as u64, Ordering::SeqCst);
    if outcome != InvocationOutcome::Succeeded {
        inner.counters.failed_invocations.fetch_add(1, Ordering::SeqCst);
        tracing::warn!(function = %wired.id, queue = %mapping.queue, %outcome, failed = failed.len(), "invocation did not fully succeed");
    }
    emit(
        inner,
        RunnerEvent::Finished {
            function: wired.id.clone(),
            source,
            deleted,
            failed: left,
            outcome,
        },
    );
}

/// Counts a finished invocation and kills the run when `abort_after_invocations` is reached.
fn finished_one(inner: &Inner) {
    let finished = inner.finished_in_run.fetch_add(1, Ordering::SeqCst) + 1;
    if inner
        .options
        .abort_after_invocations
        .is_some_and(|limit| finished >= limit)
    {
        RunnerHandle {
            control: inner.control.clone(),
        }
        .set(Control::Kill(StopReason::AbortedAfterInvocations));
    }
}

/// Fires a schedule once. The caller has counted it in `in_flight`; this uncounts it.
async fn fire(
    inner: &Inner,
    wired: &Wired,
    schedule: &Schedule,
    mut control: watch::Receiver<Control>,
) -> (InvocationOutcome, Option<Value>) {
    let source = InvocationSource::Schedule(schedule.event.clone());
    let permit = tokio::select! {
        permit = Arc::clone(&wired.semaphore).acquire_owned() => permit.ok(),
        () = killed(&mut control) => None,
    };
    let Some(permit) = permit else {
        inner.in_flight.fetch_sub(1, Ordering::SeqCst);
        return (InvocationOutcome::Killed, None);
    };
    inner.counters.invocations.fetch_add(1, Ordering::SeqCst);
    emit(
        inner,
        RunnerEvent::Invoked {
            function: wired.id.clone(),
            source: source.clone(),
            messages: 0,
        },
    );
    let invocation = invoke_guarded(
        Arc::clone(&wired.function),
        schedule.input.clone(),
        wired.timeout,
        &mut control,
    )
    .await;
    let (_, outcome) = failed_messages(&invocation, false, &[]);
    if outcome != InvocationOutcome::Succeeded {
        inner.counters.failed_invocations.fetch_add(1, Ordering::SeqCst);
        tracing::warn!(function = %wired.id, schedule = %schedule.event, %outcome, "scheduled invocation failed");
    }
    emit(
        inner,
        RunnerEvent::Finished {
            function: wired.id.clone(),
            source,
            deleted: 0,
            failed: 0,
            outcome: outcome.clone(),
        },
    );
    inner.in_flight.fetch_sub(1, Ordering::SeqCst);
    drop(permit);
    let value = match invocation {
        Invocation::Returned(v) => Some(v),
        _ => None,
    };
    (outcome, value)
}

async fn schedule_loop(inner: Arc<Inner>, function: String, schedule_index: usize, every: Duration) {
    let Some(wired) = inner.functions.get(&function) else {
        inner.in_flight.fetch_sub(1, Ordering::SeqCst);
        return;
    };
    let Some(schedule) = wired.schedules.get(schedule_index) else {
        inner.in_flight.fetch_sub(1, Ordering::SeqCst);
        return;
    };
    let mut control = inner.control.subscribe();
    loop {
        // `run` counted the first firing; later ones count themselves.
        fire(&inner, wired, schedule, inner.control.subscribe()).await;
        finished_one(&inner);
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = ended(&mut control) => return,
        }
        if *control.borrow_and_update() != Control::Run {
            return;
        }
        inner.in_flight.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn empty_or_null_batch_responses_are_complete_success() {
        let batch = ids(&["a", "b"]);
        for response in [
            Value::Null,
            json!({}),
            json!({"batchItemFailures": []}),
            json!({"batchItemFailures": null}),
        ] {
            let (failed, outcome) = failed_messages(&Invocation::Returned(response.clone()), true, &batch);
            assert!(failed.is_empty(), "{response}");
            assert_eq!(outcome, InvocationOutcome::Succeeded, "{response}");
        }
    }

    #[test]
    fn reported_failures_keep_only_those_messages() {
        let batch = ids(&["a", "b", "c"]);
        let response = json!({"batchItemFailures": [{"itemIdentifier": "b"}]});
        let (failed, outcome) = failed_messages(&Invocation::Returned(response), true, &batch);
        assert_eq!(failed, BTreeSet::from(["b".to_owned()]));
        assert_eq!(outcome, InvocationOutcome::PartiallyFailed);
    }

    #[test]
    fn unknown_or_empty_item_identifier_fails_the_whole_batch() {
        let batch = ids(&["a", "b"]);
        for response in [
            json!({"batchItemFailures": [{"itemIdentifier": "zzz"}]}),
            json!({"batchItemFailures": [{"itemIdentifier": ""}]}),
            json!({"batchItemFailures": [{"id": "a"}]}),
            json!("not an object"),
        ] {
            let (failed, outcome) = failed_messages(&Invocation::Returned(response.clone()), true, &batch);
            assert_eq!(failed.len(), 2, "{response}");
            assert!(matches!(outcome, InvocationOutcome::Failed(_)), "{response}");
        }
    }

    #[test]
    fn without_report_batch_item_failures_any_return_deletes_all() {
        let batch = ids(&["a"]);
        let response = json!({"batchItemFailures": [{"itemIdentifier": "a"}]});
        let (failed, outcome) = failed_messages(&Invocation::Returned(response), false, &batch);
        assert!(failed.is_empty());
        assert_eq!(outcome, InvocationOutcome::Succeeded);
    }

    #[test]
    fn errors_timeouts_and_panics_keep_every_message() {
        let batch = ids(&["a", "b"]);
        for invocation in [
            Invocation::Failed("boom".into()),
            Invocation::TimedOut,
            Invocation::Panicked("p".into()),
            Invocation::Killed,
        ] {
            let (failed, outcome) = failed_messages(&invocation, true, &batch);
            assert_eq!(failed.len(), 2);
            assert_ne!(outcome, InvocationOutcome::Succeeded);
        }
    }

    #[test]
    fn lambda_record_deserializes_as_an_sqs_event() {
        let message = Message::builder()
            .message_id("m-1")
            .receipt_handle("rh")
            .body(r#"{"type":"index_drive"}"#)
            .md5_of_body("abc")
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "2")
            .attributes(MessageSystemAttributeName::SentTimestamp, "1700000000000")
            .build();
        let event = json!({"Records": [lambda_record(&message, "arn:aws:sqs:us-east-1:123456789012:q", "us-east-1")]});
        let parsed: aws_lambda_events::event::sqs::SqsEvent = match serde_json::from_value(event.clone()) {
            Ok(e) => e,
            Err(e) => panic!("not an SqsEvent: {e}: {event}"),
        };
        let record = &parsed.records[0];
        assert_eq!(record.message_id.as_deref(), Some("m-1"));
        assert_eq!(record.event_source.as_deref(), Some("aws:sqs"));
        assert_eq!(
            record.event_source_arn.as_deref(),
            Some("arn:aws:sqs:us-east-1:123456789012:q")
        );
        assert_eq!(
            record.attributes.get("ApproximateReceiveCount").map(String::as_str),
            Some("2")
        );
    }
}
