//! The local runner drives functions the way Lambda's SQS pollers and EventBridge schedules do,
//! against template.yaml provisioned on a real moto server.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aws_sdk_sqs::types::QueueAttributeName;
use filetrail_aws::moto::MotoServer;
use filetrail_aws::provision::{Provisioned, provision};
use filetrail_aws::template::Template;
use filetrail_cli::local::{
    InvocationOutcome, LocalFunction, Runner, RunnerEvent, RunnerHandle, RunnerOptions, ScheduleMode, StopReason,
};
use serde_json::{Value, json};

const DISCOVER: &str = "DiscoverFunction";
const INDEX: &str = "IndexDriveFunction";

struct Stack {
    _moto: MotoServer,
    sdk: aws_config::SdkConfig,
    template: Template,
    provisioned: Provisioned,
    sqs: aws_sdk_sqs::Client,
}

impl Stack {
    async fn start() -> anyhow::Result<Stack> {
        let moto = MotoServer::start().await?;
        let sdk = moto.sdk_config().await;
        let template = Template::from_path(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml"))?;
        let provisioned = provision(&sdk, &template, "runner").await?;
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        Ok(Stack {
            _moto: moto,
            sdk,
            template,
            provisioned,
            sqs,
        })
    }

    fn url(&self, queue: &str) -> anyhow::Result<String> {
        self.provisioned
            .queue_url(queue)
            .map(str::to_owned)
            .with_context(|| format!("{queue} not provisioned"))
    }

    async fn send(&self, queue: &str, bodies: &[&str]) -> anyhow::Result<()> {
        let url = self.url(queue)?;
        for body in bodies {
            self.sqs
                .send_message()
                .queue_url(&url)
                .message_body(*body)
                .send()
                .await?;
        }
        Ok(())
    }

    /// Bodies waiting on a queue (received with a visibility timeout of 0, so left in place).
    async fn peek(&self, queue: &str) -> anyhow::Result<Vec<String>> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(self.url(queue)?)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .wait_time_seconds(1)
            .send()
            .await?;
        Ok(out
            .messages
            .unwrap_or_default()
            .iter()
            .filter_map(|m| m.body().map(str::to_owned))
            .collect())
    }

    async fn depth(&self, queue: &str) -> anyhow::Result<u64> {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(self.url(queue)?)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await?;
        Ok(out
            .attributes
            .unwrap_or_default()
            .values()
            .filter_map(|v| v.parse::<u64>().ok())
            .sum())
    }

    fn runner(&self, functions: Vec<(&str, Arc<dyn LocalFunction>)>, options: RunnerOptions) -> anyhow::Result<Runner> {
        let functions = functions
            .into_iter()
            .map(|(id, f)| (id.to_owned(), f))
            .collect::<HashMap<_, _>>();
        Ok(Runner::new(
            &self.sdk,
            &self.template,
            &self.provisioned,
            functions,
            options,
        )?)
    }
}

/// Fast settings for tests: 1 s visibility so failed messages come back quickly, 1 s long polls,
/// schedules only on demand, stop once idle for 300 ms. One poller per queue: moto does not lock
/// concurrent receives, so two pollers can both get one message (SQS is at-least-once too), which
/// would blur exact delivery counts.
fn fast() -> RunnerOptions {
    RunnerOptions {
        concurrency: 1,
        visibility_timeout: Some(Duration::from_secs(1)),
        receive_wait: Duration::from_secs(1),
        schedules: ScheduleMode::OnDemand,
        until_idle: Some(Duration::from_millis(300)),
        ..RunnerOptions::default()
    }
}

/// One SQS record as the function saw it.
#[derive(Debug, Clone)]
struct Seen {
    body: String,
    receive_count: u32,
}

type Behaviour = dyn Fn(&Value, &[Seen]) -> anyhow::Result<Value> + Send + Sync;

/// A fake function that records every payload and answers with `behaviour`.
struct Recorder {
    payloads: Mutex<Vec<Value>>,
    behaviour: Box<Behaviour>,
}

impl Recorder {
    fn new(behaviour: impl Fn(&Value, &[Seen]) -> anyhow::Result<Value> + Send + Sync + 'static) -> Arc<Recorder> {
        Arc::new(Recorder {
            payloads: Mutex::new(Vec::new()),
            behaviour: Box::new(behaviour),
        })
    }

    fn payloads(&self) -> Vec<Value> {
        self.payloads.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// Every SQS record delivered so far, in order.
    fn seen(&self) -> Vec<Seen> {
        self.payloads().iter().flat_map(records).collect()
    }

    fn deliveries_of(&self, body: &str) -> Vec<u32> {
        self.seen()
            .iter()
            .filter(|s| s.body == body)
            .map(|s| s.receive_count)
            .collect()
    }
}

fn records(payload: &Value) -> Vec<Seen> {
    payload["Records"]
        .as_array()
        .map(|records| {
            records
                .iter()
                .map(|r| Seen {
                    body: r["body"].as_str().unwrap_or_default().to_owned(),
                    receive_count: r["attributes"]["ApproximateReceiveCount"]
                        .as_str()
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[async_trait::async_trait]
impl LocalFunction for Recorder {
    async fn invoke(&self, payload: Value, _deadline: Instant) -> anyhow::Result<Value> {
        if let Ok(mut p) = self.payloads.lock() {
            p.push(payload.clone());
        }
        (self.behaviour)(&payload, &records(&payload))
    }
}

fn ok_all() -> impl Fn(&Value, &[Seen]) -> anyhow::Result<Value> + Send + Sync + 'static {
    |_, _| Ok(json!({"batchItemFailures": []}))
}

#[tokio::test]
async fn a_message_reported_as_failed_is_the_only_one_redelivered() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    stack.send("IndexQueue", &["a", "b", "c"]).await?;
    // Fail "b" on its first delivery only, through a partial batch response.
    let index = Recorder::new(|payload, _| {
        let failures: Vec<Value> = payload["Records"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["body"] == "b" && r["attributes"]["ApproximateReceiveCount"] == "1")
            .map(|r| json!({"itemIdentifier": r["messageId"]}))
            .collect();
        Ok(json!({ "batchItemFailures": failures }))
    });
    let runner = stack.runner(vec![(INDEX, index.clone())], fast())?;

    let report = runner.run().await;

    assert_eq!(report.reason, StopReason::Idle);
    assert_eq!(index.deliveries_of("a"), vec![1]);
    assert_eq!(index.deliveries_of("c"), vec![1]);
    assert_eq!(
        index.deliveries_of("b"),
        vec![1, 2],
        "b comes back once, with its receive count"
    );
    assert_eq!(report.stats.messages_deleted, 3);
    assert_eq!(report.stats.messages_failed, 1);
    assert_eq!(stack.depth("IndexQueue").await?, 0);
    assert!(stack.peek("IndexDeadLetterQueue").await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_message_failing_every_time_ends_in_the_dead_letter_queue_after_max_receive_count() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let max_receive_count = stack.template.queues["IndexQueue"]
        .redrive
        .as_ref()
        .map(|r| r.max_receive_count)
        .context("IndexQueue has no redrive policy")?;
    stack.send("IndexQueue", &["poison"]).await?;
    let index = Recorder::new(|_, _| bail!("cannot process this"));
    let runner = stack.runner(vec![(INDEX, index.clone())], fast())?;

    let report = runner.run().await;

    assert_eq!(report.reason, StopReason::Idle);
    let deliveries = index.deliveries_of("poison");
    assert_eq!(deliveries, (1..=max_receive_count).collect::<Vec<_>>());
    assert_eq!(stack.peek("IndexDeadLetterQueue").await?, vec!["poison".to_owned()]);
    assert_eq!(stack.depth("IndexQueue").await?, 0);
    Ok(())
}

#[tokio::test]
async fn fire_schedule_invokes_the_function_with_the_templates_input() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let discover = Recorder::new(|_, _| Ok(Value::Null));
    let runner = stack.runner(vec![(DISCOVER, discover.clone())], fast())?;

    let results = runner.fire_schedule(DISCOVER).await?;

    assert_eq!(results, vec![Value::Null]);
    assert_eq!(discover.payloads(), vec![json!({"type": "discover_all"})]);
    let err = runner
        .fire_schedule("NoSuchFunction")
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("NoSuchFunction"), "{err}");
    Ok(())
}

#[tokio::test]
async fn emulated_schedule_fires_once_when_the_run_starts() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let discover = Recorder::new(|_, _| Ok(Value::Null));
    let options = RunnerOptions {
        schedules: ScheduleMode::Emulate,
        ..fast()
    };
    let runner = stack.runner(vec![(DISCOVER, discover.clone())], options)?;

    let report = runner.run().await;

    assert_eq!(report.reason, StopReason::Idle);
    assert_eq!(discover.payloads(), vec![json!({"type": "discover_all"})]);
    Ok(())
}

/// Discover fans out to the index queue; the run ends only when that work is done too.
#[tokio::test]
async fn until_idle_returns_once_every_mapped_queue_has_drained() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    stack.send("DiscoverQueue", &["d1", "d2"]).await?;
    let sqs = stack.sqs.clone();
    let index_url = stack.url("IndexQueue")?;
    let discover = Arc::new(FanOut {
        sqs,
        index_url,
        calls: Mutex::new(0),
    });
    let index = Recorder::new(ok_all());
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let options = RunnerOptions {
        on_event: Some(Arc::new(move |e: &RunnerEvent| {
            if let Ok(mut events) = sink.lock() {
                events.push(e.clone());
            }
        })),
        ..fast()
    };
    let runner = stack.runner(vec![(DISCOVER, discover.clone()), (INDEX, index.clone())], options)?;

    let report = runner.run().await;

    assert_eq!(report.reason, StopReason::Idle);
    let mut indexed: Vec<String> = index.seen().into_iter().map(|s| s.body).collect();
    indexed.sort();
    assert_eq!(indexed, vec!["from-d1", "from-d2"]);
    assert_eq!(stack.depth("DiscoverQueue").await?, 0);
    assert_eq!(stack.depth("IndexQueue").await?, 0);
    assert_eq!(report.stats.messages_deleted, 4);
    let finished = events
        .lock()
        .map(|e| {
            e.iter()
                .filter(|e| {
                    matches!(
                        e,
                        RunnerEvent::Finished {
                            outcome: InvocationOutcome::Succeeded,
                            ..
                        }
                    )
                })
                .count()
        })
        .unwrap_or_default();
    assert_eq!(u64::try_from(finished)?, report.stats.invocations);
    Ok(())
}

/// Sends `from-<body>` to the index queue for each discover message.
struct FanOut {
    sqs: aws_sdk_sqs::Client,
    index_url: String,
    calls: Mutex<u32>,
}

#[async_trait::async_trait]
impl LocalFunction for FanOut {
    async fn invoke(&self, payload: Value, _deadline: Instant) -> anyhow::Result<Value> {
        if let Ok(mut calls) = self.calls.lock() {
            *calls += 1;
        }
        for record in records(&payload) {
            self.sqs
                .send_message()
                .queue_url(&self.index_url)
                .message_body(format!("from-{}", record.body))
                .send()
                .await?;
        }
        Ok(json!({"batchItemFailures": []}))
    }
}

/// Kills the runner from inside its first invocation, then never returns.
struct KillsMidway {
    handle: OnceLock<RunnerHandle>,
    calls: Mutex<u32>,
}

#[async_trait::async_trait]
impl LocalFunction for KillsMidway {
    async fn invoke(&self, _payload: Value, _deadline: Instant) -> anyhow::Result<Value> {
        if let Ok(mut calls) = self.calls.lock() {
            *calls += 1;
        }
        if let Some(handle) = self.handle.get() {
            handle.kill();
        }
        std::future::pending::<()>().await;
        Ok(Value::Null)
    }
}

#[tokio::test]
async fn a_killed_worker_leaves_its_batch_for_the_next_run() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    stack.send("IndexQueue", &["drive-1"]).await?;
    let dying = Arc::new(KillsMidway {
        handle: OnceLock::new(),
        calls: Mutex::new(0),
    });
    let runner = stack.runner(vec![(INDEX, dying.clone())], fast())?;
    let _ = dying.handle.set(runner.handle());

    let report = runner.run().await;

    assert_eq!(report.reason, StopReason::Killed);
    assert_eq!(report.stats.messages_deleted, 0);
    // WHEN a new worker starts THEN it receives the same message again, for the second time.
    let index = Recorder::new(ok_all());
    let restarted = stack.runner(vec![(INDEX, index.clone())], fast())?;
    let report = restarted.run().await;
    assert_eq!(report.reason, StopReason::Idle);
    assert_eq!(index.deliveries_of("drive-1"), vec![2]);
    assert_eq!(stack.depth("IndexQueue").await?, 0);
    Ok(())
}

#[tokio::test]
async fn abort_after_invocations_stops_with_the_rest_still_queued() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    stack.send("DiscoverQueue", &["one", "two", "three"]).await?;
    let discover = Recorder::new(ok_all());
    let options = RunnerOptions {
        concurrency: 1,
        abort_after_invocations: Some(1),
        ..fast()
    };
    let runner = stack.runner(vec![(DISCOVER, discover.clone())], options)?;

    let report = runner.run().await;

    assert_eq!(report.reason, StopReason::AbortedAfterInvocations);
    assert_eq!(
        report.stats.invocations, 1,
        "BatchSize 1 and concurrency 1: one message per invocation"
    );
    assert_eq!(report.stats.messages_deleted, 1);
    assert_eq!(stack.depth("DiscoverQueue").await?, 2);
    Ok(())
}

#[tokio::test]
async fn timed_out_and_panicking_invocations_keep_their_messages() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    stack.send("DiscoverQueue", &["slow", "panics"]).await?;
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let options = RunnerOptions {
        invocation_timeout: Some(Duration::from_millis(500)),
        on_event: Some(Arc::new(move |e: &RunnerEvent| {
            if let Ok(mut events) = sink.lock() {
                events.push(e.clone());
            }
        })),
        ..fast()
    };
    let runner = stack.runner(vec![(DISCOVER, Arc::new(Misbehaves))], options)?;

    let report = runner.run().await;

    assert_eq!(report.reason, StopReason::Idle);
    let outcomes: Vec<InvocationOutcome> = events
        .lock()
        .map(|e| {
            e.iter()
                .filter_map(|e| match e {
                    RunnerEvent::Finished { outcome, .. } => Some(outcome.clone()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(outcomes.contains(&InvocationOutcome::TimedOut), "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, InvocationOutcome::Panicked(m) if m.contains("first delivery"))),
        "{outcomes:?}"
    );
    // Both came back and succeeded on their second delivery.
    assert_eq!(report.stats.messages_deleted, 2);
    assert_eq!(report.stats.messages_failed, 2);
    assert_eq!(stack.depth("DiscoverQueue").await?, 0);
    Ok(())
}

/// Times out on "slow" and panics on "panics", each on its first delivery only.
struct Misbehaves;

#[async_trait::async_trait]
impl LocalFunction for Misbehaves {
    async fn invoke(&self, payload: Value, deadline: Instant) -> anyhow::Result<Value> {
        for record in records(&payload) {
            if record.receive_count > 1 {
                continue;
            }
            match record.body.as_str() {
                "slow" => {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(deadline) + Duration::from_secs(30)).await
                }
                "panics" => panic!("first delivery"),
                _ => {}
            }
        }
        Ok(json!({"batchItemFailures": []}))
    }
}

#[tokio::test]
async fn sqs_event_carries_the_fields_lambda_sends() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    stack.send("DiscoverQueue", &[r#"{"type":"discover_all"}"#]).await?;
    let discover = Recorder::new(ok_all());
    let runner = stack.runner(vec![(DISCOVER, discover.clone())], fast())?;

    runner.run().await;

    let payloads = discover.payloads();
    assert_eq!(payloads.len(), 1);
    let record = &payloads[0]["Records"][0];
    let arn = stack
        .provisioned
        .resource("DiscoverQueue")
        .map(|r| r.arn.clone())
        .unwrap_or_default();
    assert_eq!(record["eventSource"], "aws:sqs");
    assert_eq!(record["eventSourceARN"], arn.as_str());
    assert_eq!(record["awsRegion"], "us-east-1");
    assert_eq!(record["body"], r#"{"type":"discover_all"}"#);
    for field in ["messageId", "receiptHandle", "md5OfBody"] {
        assert!(
            record[field].as_str().is_some_and(|v| !v.is_empty()),
            "{field} missing: {record}"
        );
    }
    for attribute in [
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
    ] {
        assert!(
            record["attributes"][attribute].is_string(),
            "attribute {attribute} missing: {record}"
        );
    }
    assert!(record["messageAttributes"].is_object());
    let typed: aws_lambda_events::event::sqs::SqsEvent = serde_json::from_value(payloads[0].clone())?;
    assert_eq!(typed.records.len(), 1);
    Ok(())
}

/// Counts invocations running at once.
struct Overlap {
    running: Mutex<(u32, u32)>,
    bodies: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl LocalFunction for Overlap {
    async fn invoke(&self, payload: Value, _deadline: Instant) -> anyhow::Result<Value> {
        if let Ok(mut r) = self.running.lock() {
            r.0 += 1;
            r.1 = r.1.max(r.0);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(mut b) = self.bodies.lock() {
            b.extend(records(&payload).into_iter().map(|s| s.body));
        }
        if let Ok(mut r) = self.running.lock() {
            r.0 -= 1;
        }
        Ok(json!({"batchItemFailures": []}))
    }
}

#[tokio::test]
async fn no_more_invocations_run_at_once_than_the_concurrency_allows() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let bodies = ["m1", "m2", "m3", "m4", "m5", "m6"];
    stack.send("DiscoverQueue", &bodies).await?;
    let discover = Arc::new(Overlap {
        running: Mutex::new((0, 0)),
        bodies: Mutex::new(Vec::new()),
    });
    let options = RunnerOptions {
        concurrency: 2,
        ..fast()
    };
    let runner = stack.runner(vec![(DISCOVER, discover.clone())], options)?;

    let report = runner.run().await;

    assert_eq!(report.reason, StopReason::Idle);
    let most = discover.running.lock().map(|r| r.1).unwrap_or(u32::MAX);
    assert!(
        (1..=2).contains(&most),
        "{most} invocations ran at once with concurrency 2"
    );
    // Every message was processed (at least once: SQS may deliver twice) and none is left.
    let mut seen = discover.bodies.lock().map(|b| b.clone()).unwrap_or_default();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, bodies);
    assert_eq!(stack.depth("DiscoverQueue").await?, 0);
    Ok(())
}
