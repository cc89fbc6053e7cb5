//! Drift test: the resources `provision` creates from template.yaml on moto are what the template
//! says, read back with the services' own Describe/Get calls; and every function's environment
//! resolves to the settings its code reads.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use anyhow::{Context, bail, ensure};
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{KeySchemaElement, KeyType};
use aws_sdk_sqs::types::QueueAttributeName;
use filetrail_aws::config::{AwsResources, Resource, SECRET_PREFIX_VAR};
use filetrail_aws::moto::MotoServer;
use filetrail_aws::provision::{Provisioned, ResourceKind, bucket_name, physical_name, provision};
use filetrail_aws::template::{GlobalSecondaryIndex, KeySchema, TableSpec, Template};

const STACK: &str = "drift";

fn template() -> anyhow::Result<Template> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml");
    Template::from_path(&path).with_context(|| format!("parsing {}", path.display()))
}

async fn provisioned_stack() -> anyhow::Result<(MotoServer, aws_config::SdkConfig, Template, Provisioned)> {
    let moto = MotoServer::start().await?;
    let sdk = moto.sdk_config().await;
    let template = template()?;
    let provisioned = provision(&sdk, &template, STACK).await?;
    Ok((moto, sdk, template, provisioned))
}

fn key_pairs(elements: &[KeySchemaElement]) -> BTreeSet<(String, String)> {
    elements
        .iter()
        .map(|k| (k.attribute_name().to_owned(), k.key_type().as_str().to_owned()))
        .collect()
}

fn expected_key_pairs(key: &KeySchema) -> BTreeSet<(String, String)> {
    let mut pairs = BTreeSet::from([(key.hash.clone(), KeyType::Hash.as_str().to_owned())]);
    if let Some(range) = &key.range {
        pairs.insert((range.clone(), KeyType::Range.as_str().to_owned()));
    }
    pairs
}

#[tokio::test]
async fn tables_on_moto_have_the_templates_keys_indexes_and_settings() -> anyhow::Result<()> {
    let (_moto, sdk, template, _) = provisioned_stack().await?;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    ensure!(!template.tables.is_empty(), "template.yaml declares no table");

    for spec in template.tables.values() {
        let name = physical_name(STACK, &spec.logical_id);
        let table = ddb
            .describe_table()
            .table_name(&name)
            .send()
            .await
            .with_context(|| format!("DescribeTable {name}"))?
            .table
            .with_context(|| format!("{name}: no description"))?;

        assert_eq!(
            key_pairs(table.key_schema()),
            expected_key_pairs(&spec.key_schema),
            "{name}: key schema"
        );
        let attributes: BTreeSet<(String, String)> = table
            .attribute_definitions()
            .iter()
            .map(|a| (a.attribute_name().to_owned(), a.attribute_type().as_str().to_owned()))
            .collect();
        let expected: BTreeSet<(String, String)> = spec
            .attribute_definitions
            .iter()
            .map(|a| (a.attribute_name.clone(), a.attribute_type.clone()))
            .collect();
        assert_eq!(attributes, expected, "{name}: attribute definitions");

        let indexes: BTreeMap<&str, _> = table
            .global_secondary_indexes()
            .iter()
            .filter_map(|g| g.index_name().map(|n| (n, g)))
            .collect();
        assert_eq!(
            indexes.keys().copied().collect::<BTreeSet<_>>(),
            spec.global_secondary_indexes
                .iter()
                .map(|g| g.name.as_str())
                .collect::<BTreeSet<_>>(),
            "{name}: GSI names"
        );
        for gsi in &spec.global_secondary_indexes {
            let actual = indexes[gsi.name.as_str()];
            assert_eq!(
                key_pairs(actual.key_schema()),
                expected_key_pairs(&gsi.key_schema),
                "{name}/{}: keys",
                gsi.name
            );
            let projection = actual
                .projection()
                .with_context(|| format!("{name}/{}: no projection", gsi.name))?;
            assert_eq!(
                projection.projection_type().map(|p| p.as_str()),
                Some(gsi.projection.projection_type.as_str()),
                "{name}/{}: projection type",
                gsi.name
            );
            let non_key: BTreeSet<&str> = projection.non_key_attributes().iter().map(String::as_str).collect();
            let expected: BTreeSet<&str> = gsi.projection.non_key_attributes.iter().map(String::as_str).collect();
            assert_eq!(non_key, expected, "{name}/{}: projected attributes", gsi.name);
        }

        let billing = table
            .billing_mode_summary()
            .and_then(|b| b.billing_mode())
            .map(|b| b.as_str());
        assert_eq!(billing, Some(spec.billing_mode.as_str()), "{name}: billing mode");
        if spec.sse_enabled {
            let sse = table.sse_description().and_then(|s| s.status()).map(|s| s.as_str());
            assert_eq!(sse, Some("ENABLED"), "{name}: server-side encryption");
        }
        if spec.point_in_time_recovery {
            let backups = ddb
                .describe_continuous_backups()
                .table_name(&name)
                .send()
                .await
                .with_context(|| format!("DescribeContinuousBackups {name}"))?;
            let pitr = backups
                .continuous_backups_description()
                .and_then(|d| d.point_in_time_recovery_description())
                .and_then(|p| p.point_in_time_recovery_status())
                .map(|s| s.as_str());
            assert_eq!(pitr, Some("ENABLED"), "{name}: point-in-time recovery");
        }
    }
    Ok(())
}

fn table<'a>(template: &'a Template, logical_id: &str) -> anyhow::Result<&'a TableSpec> {
    template
        .tables
        .get(logical_id)
        .with_context(|| format!("template.yaml declares no {logical_id}"))
}

fn index<'a>(table: &'a TableSpec, name: &str) -> anyhow::Result<&'a GlobalSecondaryIndex> {
    table
        .global_secondary_indexes
        .iter()
        .find(|g| g.name == name)
        .with_context(|| format!("{}: no index {name}", table.logical_id))
}

fn keys(hash: &str, range: Option<&str>) -> KeySchema {
    KeySchema {
        hash: hash.to_owned(),
        range: range.map(str::to_owned),
    }
}

fn included(gsi: &GlobalSecondaryIndex) -> (String, BTreeSet<String>) {
    (
        gsi.projection.projection_type.clone(),
        gsi.projection.non_key_attributes.iter().cloned().collect(),
    )
}

fn include(attrs: &[&str]) -> (String, BTreeSet<String>) {
    ("INCLUDE".to_owned(), attrs.iter().map(|a| (*a).to_owned()).collect())
}

/// The keys and indexes the adapters write and query (their layout constants) are the ones
/// template.yaml declares, so a rename on either side fails here rather than in AWS.
#[test]
fn adapter_layouts_match_the_templates_tables() -> anyhow::Result<()> {
    use filetrail_aws::events as ev;
    use filetrail_aws::{inventory, state};
    let template = template()?;

    let st = table(&template, "StateTable")?;
    assert_eq!(st.key_schema, keys(state::PK, Some(state::SK)));
    let gsi1 = index(st, state::GSI1)?;
    assert_eq!(gsi1.key_schema, keys(state::GSI1_PK, Some(state::GSI1_SK)));
    assert_eq!(included(gsi1), include(&state::GSI1_INCLUDED));
    let gsi2 = index(st, state::GSI2)?;
    assert_eq!(gsi2.key_schema, keys(state::GSI2_PK, None));
    assert_eq!(gsi2.projection.projection_type, "KEYS_ONLY");
    assert_eq!(
        st.time_to_live.as_ref().map(|t| (t.attribute_name.as_str(), t.enabled)),
        Some((state::EXPIRES_AT, true))
    );

    let inv = table(&template, "InventoryTable")?;
    assert_eq!(inv.key_schema, keys(inventory::DRIVE_ID, Some(inventory::ITEM_ID)));
    let exposure = index(inv, filetrail_aws::sharing::BY_EXPOSURE)?;
    assert_eq!(
        exposure.key_schema,
        keys(
            filetrail_aws::sharing::EXPOSED_PK,
            Some(filetrail_aws::sharing::EXPOSED_SK)
        )
    );
    assert_eq!(included(exposure), include(&[filetrail_aws::sharing::SHARING]));
    assert_eq!(
        inv.global_secondary_indexes.len(),
        1,
        "an index the adapter does not know"
    );

    let events = table(&template, "EventsTable")?;
    assert_eq!(events.key_schema, keys(ev::EVENT_KEY, None));
    for (name, pk) in [
        (ev::BY_ACTOR, ev::ACTOR_PK),
        (ev::BY_OWNER, ev::OWNER_PK),
        (ev::BY_FILE, ev::FILE_PK),
        (ev::BY_SHA256, ev::SHA256),
        (ev::BY_MD5, ev::MD5),
        (ev::BY_DAY, ev::DAY_PK),
        (ev::BY_EXTERNAL, ev::EXTERNAL_PK),
    ] {
        let gsi = index(events, name)?;
        assert_eq!(gsi.key_schema, keys(pk, Some(ev::OBSERVED_SK)), "{name}");
        assert_eq!(included(gsi), include(&ev::SEARCH_INCLUDED), "{name}");
    }
    for (name, pk, sk) in [
        (ev::BY_NAME, ev::NAME_PK, ev::NAME_SK),
        (ev::BY_PATH, ev::PATH_PK, ev::PATH_SK),
    ] {
        let gsi = index(events, name)?;
        assert_eq!(gsi.key_schema, keys(pk, Some(sk)), "{name}");
        let mut with_time = ev::SEARCH_INCLUDED.to_vec();
        with_time.push(ev::OBSERVED_SK);
        assert_eq!(included(gsi), include(&with_time), "{name}");
    }
    let by_inserted = index(events, ev::BY_INSERTED)?;
    assert_eq!(by_inserted.key_schema, keys(ev::INSERTED_PK, Some(ev::INSERTED_SK)));
    assert_eq!(included(by_inserted), include(&ev::EXPORT_INCLUDED));
    assert_eq!(
        events.global_secondary_indexes.len(),
        10,
        "an index the adapter does not know"
    );
    for t in [st, inv, events] {
        assert!(
            t.point_in_time_recovery && t.sse_enabled && t.billing_mode == "PAY_PER_REQUEST",
            "{}: PITR, SSE and on-demand billing",
            t.logical_id
        );
    }
    Ok(())
}

#[tokio::test]
async fn queues_on_moto_have_the_templates_timeouts_and_redrive_targets() -> anyhow::Result<()> {
    let (_moto, sdk, template, _) = provisioned_stack().await?;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    ensure!(!template.queues.is_empty(), "template.yaml declares no queue");

    // Read every queue back by its expected physical name, independently of `Provisioned`.
    let mut actual: HashMap<String, HashMap<QueueAttributeName, String>> = HashMap::new();
    for spec in template.queues.values() {
        let name = physical_name(STACK, &spec.logical_id);
        let url = sqs
            .get_queue_url()
            .queue_name(&name)
            .send()
            .await
            .with_context(|| format!("GetQueueUrl {name}"))?
            .queue_url
            .with_context(|| format!("{name}: no URL"))?;
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .with_context(|| format!("GetQueueAttributes {name}"))?
            .attributes
            .unwrap_or_default();
        actual.insert(spec.logical_id.clone(), attributes);
    }

    for spec in template.queues.values() {
        let attrs = &actual[&spec.logical_id];
        let get = |a: QueueAttributeName| attrs.get(&a).cloned().unwrap_or_default();
        assert_eq!(
            get(QueueAttributeName::VisibilityTimeout),
            spec.visibility_timeout_secs.to_string(),
            "{}: VisibilityTimeout",
            spec.logical_id
        );
        assert_eq!(
            get(QueueAttributeName::MessageRetentionPeriod),
            spec.message_retention_secs.to_string(),
            "{}: MessageRetentionPeriod",
            spec.logical_id
        );
        match &spec.redrive {
            None => assert!(
                !attrs.contains_key(&QueueAttributeName::RedrivePolicy),
                "{}: has a redrive policy the template does not declare",
                spec.logical_id
            ),
            Some(redrive) => {
                let policy: serde_json::Value = serde_json::from_str(&get(QueueAttributeName::RedrivePolicy))
                    .with_context(|| format!("{}: RedrivePolicy is not JSON", spec.logical_id))?;
                let dlq_arn = actual[&redrive.dead_letter_queue]
                    .get(&QueueAttributeName::QueueArn)
                    .cloned()
                    .unwrap_or_default();
                assert_eq!(
                    policy["deadLetterTargetArn"],
                    dlq_arn.as_str(),
                    "{}: redrive target",
                    spec.logical_id
                );
                let max = match &policy["maxReceiveCount"] {
                    serde_json::Value::Number(n) => n.as_u64(),
                    serde_json::Value::String(s) => s.parse().ok(),
                    _ => None,
                };
                assert_eq!(
                    max,
                    Some(u64::from(redrive.max_receive_count)),
                    "{}: maxReceiveCount",
                    spec.logical_id
                );
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn buckets_on_moto_exist_with_versioning_as_declared() -> anyhow::Result<()> {
    let (_moto, sdk, template, _) = provisioned_stack().await?;
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true).build());
    for spec in template.buckets.values() {
        let name = bucket_name(STACK, &spec.logical_id);
        s3.head_bucket()
            .bucket(&name)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("HeadBucket {name}: {}", DisplayErrorContext(&e)))?;
        // moto answers GetBucketVersioning with a root element the SDK rejects, so check the
        // behaviour instead: writing one key twice keeps two versions only when versioning is on.
        for body in ["v1", "v2"] {
            s3.put_object()
                .bucket(&name)
                .key("drift-probe")
                .body(body.as_bytes().to_vec().into())
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("PutObject {name}: {}", DisplayErrorContext(&e)))?;
        }
        let versions = s3
            .list_object_versions()
            .bucket(&name)
            .prefix("drift-probe")
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("ListObjectVersions {name}: {}", DisplayErrorContext(&e)))?;
        let kept = versions.versions().len();
        assert_eq!(kept == 2, spec.versioning, "{name}: versioning (versions kept: {kept})");
    }
    Ok(())
}

/// A lifecycle rule: id, prefix, and its expiration, noncurrent-version and multipart days.
type RuleDays = (String, Option<String>, Option<i32>, Option<i32>, Option<i32>);

/// The lifecycle rules a bucket has, read back from moto, are the template's; the deployment
/// bucket expires quarantined records (IP addresses, UPNs) and exports after the parameters'
/// default days.
#[tokio::test]
async fn bucket_lifecycle_on_moto_expires_quarantine_and_exports_as_declared() -> anyhow::Result<()> {
    let (_moto, sdk, template, _) = provisioned_stack().await?;
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true).build());
    let mut expiring = BTreeMap::new();
    for spec in template.buckets.values().filter(|b| !b.lifecycle.is_empty()) {
        let name = bucket_name(STACK, &spec.logical_id);
        let out = s3
            .get_bucket_lifecycle_configuration()
            .bucket(&name)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("GetBucketLifecycleConfiguration {name}: {}", DisplayErrorContext(&e)))?;
        let stored: Vec<RuleDays> = out
            .rules()
            .iter()
            .map(|r| {
                (
                    r.id().unwrap_or_default().to_owned(),
                    r.filter()
                        .and_then(|f| f.prefix())
                        .filter(|p| !p.is_empty())
                        .map(str::to_owned),
                    r.expiration().and_then(|e| e.days()),
                    r.noncurrent_version_expiration().and_then(|n| n.noncurrent_days()),
                    r.abort_incomplete_multipart_upload()
                        .and_then(|a| a.days_after_initiation()),
                )
            })
            .collect();
        let declared: Vec<RuleDays> = spec
            .lifecycle
            .iter()
            .map(|r| {
                let days = |d: Option<u32>| d.map(|d| i32::try_from(d).unwrap());
                (
                    r.id.clone(),
                    r.prefix.clone(),
                    days(r.expiration_days),
                    days(r.noncurrent_days),
                    days(r.abort_multipart_days),
                )
            })
            .collect();
        assert_eq!(stored, declared, "{name}");
        for (_, prefix, days, _, _) in stored {
            if let (Some(prefix), Some(days)) = (prefix, days) {
                expiring.insert(prefix, days);
            }
        }
    }
    assert_eq!(
        expiring,
        BTreeMap::from([("exports/".to_owned(), 400), ("quarantine/".to_owned(), 30)])
    );
    Ok(())
}

/// The notifications a bucket has, read back from moto, against the template's: and an upload
/// under the filter reaches the queue while one outside it (a result document) does not.
#[tokio::test]
async fn bucket_notifications_on_moto_send_scope_uploads_to_the_templates_queue() -> anyhow::Result<()> {
    let (_moto, sdk, template, provisioned) = provisioned_stack().await?;
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true).build());
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let mut checked = 0;
    for spec in template.buckets.values() {
        let name = bucket_name(STACK, &spec.logical_id);
        let config = s3
            .get_bucket_notification_configuration()
            .bucket(&name)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("GetBucketNotificationConfiguration {name}: {}", DisplayErrorContext(&e)))?;
        let live = config.queue_configurations();
        assert_eq!(
            live.len(),
            spec.queue_notifications.len(),
            "{name}: queue notifications"
        );
        for (declared, live) in spec.queue_notifications.iter().zip(live) {
            let queue = provisioned
                .resource(&declared.queue)
                .expect("the notified queue is provisioned");
            assert_eq!(live.queue_arn(), queue.arn, "{name}: notified queue");
            let events: Vec<String> = live.events().iter().map(|e| e.as_str().to_owned()).collect();
            assert_eq!(events, declared.events, "{name}: events");
            let rules: BTreeSet<(String, String)> = live
                .filter()
                .and_then(|f| f.key())
                .map(|k| k.filter_rules())
                .unwrap_or_default()
                .iter()
                .map(|r| {
                    (
                        r.name().map(|n| n.as_str().to_lowercase()).unwrap_or_default(),
                        r.value().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            let mut expected = BTreeSet::new();
            if let Some(p) = &declared.prefix {
                expected.insert(("prefix".to_owned(), p.clone()));
            }
            if let Some(p) = &declared.suffix {
                expected.insert(("suffix".to_owned(), p.clone()));
            }
            assert_eq!(rules, expected, "{name}: key filter");

            let url = provisioned.queue_url(&declared.queue).expect("queue url");
            // Every object under scoping/ is notified, whatever its name (apply-scope answers
            // each, and passes over its own results); nothing elsewhere is.
            for key in [
                "scoping/contoso/users.csv",
                "scoping/contoso/Users.TXT",
                "scoping/contoso/results/x.json",
                "elsewhere/users.csv",
            ] {
                s3.put_object()
                    .bucket(&name)
                    .key(key)
                    .body(b"Email\nuser@contoso.com\n".to_vec().into())
                    .send()
                    .await
                    .map_err(|e| anyhow::anyhow!("PutObject {key}: {}", DisplayErrorContext(&e)))?;
            }
            let mut keys = Vec::new();
            for _ in 0..3 {
                let out = sqs
                    .receive_message()
                    .queue_url(url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(1)
                    .send()
                    .await?;
                for m in out.messages() {
                    let body: serde_json::Value = serde_json::from_str(m.body().unwrap_or_default())?;
                    for r in body["Records"].as_array().into_iter().flatten() {
                        keys.push(r["s3"]["object"]["key"].as_str().unwrap_or_default().to_owned());
                    }
                }
            }
            keys.sort();
            assert_eq!(
                keys,
                [
                    "scoping%2Fcontoso%2FUsers.TXT",
                    "scoping%2Fcontoso%2Fresults%2Fx.json",
                    "scoping%2Fcontoso%2Fusers.csv",
                ],
                "{name}: delivered events"
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "the template declares at least one bucket notification");
    Ok(())
}

#[tokio::test]
async fn provisioning_twice_keeps_the_same_resources() -> anyhow::Result<()> {
    let (_moto, sdk, template, first) = provisioned_stack().await?;
    let second = provision(&sdk, &template, STACK).await?;
    assert_eq!(first, second);
    Ok(())
}

/// What each function's code requires from `filetrail_aws::config` at cold start
/// ([`Resource::SecretPrefix`]: it reads Microsoft credentials from Secrets Manager).
fn required_by(function: &str) -> anyhow::Result<&'static [Resource]> {
    use Resource::*;
    Ok(match function {
        "DiscoverFunction" => &[StateTable, DiscoverQueue, IndexQueue, SecretPrefix],
        "IndexDriveFunction" => &[StateTable, InventoryTable, IndexQueue, SecretPrefix],
        "ApplyScopeFunction" => &[StateTable, DiscoverQueue, Bucket],
        "PollActivityFunction" => &[StateTable, ActivityQueue, SecretPrefix],
        "IngestActivityFunction" => &[
            StateTable,
            EventsTable,
            InventoryTable,
            Bucket,
            HashQueue,
            IndexQueue,
            SecretPrefix,
        ],
        "HashFileFunction" => &[StateTable, EventsTable, InventoryTable, HashQueue, SecretPrefix],
        "ExportFunction" => &[StateTable, EventsTable, Bucket],
        other => bail!("template function {other} has no entry in required_by: add what its code reads"),
    })
}

#[tokio::test]
async fn every_function_env_resolves_to_provisioned_resources_its_config_accepts() -> anyhow::Result<()> {
    let (_moto, sdk, template, provisioned) = provisioned_stack().await?;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let s3 = aws_sdk_s3::Client::new(&sdk);
    ensure!(!template.functions.is_empty(), "template.yaml declares no function");

    for function in template.functions.values() {
        let id = &function.logical_id;
        let env = provisioned
            .resolve_env(function)
            .with_context(|| format!("{id}: environment does not resolve"))?;
        for (var, value) in &env {
            assert!(!value.is_empty(), "{id}: {var} resolved to an empty string");
        }
        let needed = required_by(id)?;
        assert_eq!(
            env.contains_key(SECRET_PREFIX_VAR),
            needed.contains(&Resource::SecretPrefix),
            "{id}: {SECRET_PREFIX_VAR} is set exactly when the function reads Microsoft credentials"
        );
        assert!(env.contains_key("RUST_LOG"), "{id}: RUST_LOG (Globals) is not set");

        let config = AwsResources::from_env_map(&env).with_context(|| format!("{id}: config rejects its env"))?;
        config
            .require(needed)
            .with_context(|| format!("{id}: template.yaml misses a setting"))?;

        // Each setting names a resource that exists on the endpoint.
        for resource in needed {
            let value = config.get(*resource)?;
            match resource {
                Resource::StateTable | Resource::InventoryTable | Resource::EventsTable => {
                    ddb.describe_table()
                        .table_name(value)
                        .send()
                        .await
                        .with_context(|| format!("{id}: table {value}"))?;
                }
                Resource::DiscoverQueue | Resource::IndexQueue | Resource::ActivityQueue | Resource::HashQueue => {
                    sqs.get_queue_attributes()
                        .queue_url(value)
                        .send()
                        .await
                        .with_context(|| format!("{id}: queue {value}"))?;
                }
                Resource::Bucket => {
                    s3.head_bucket()
                        .bucket(value)
                        .send()
                        .await
                        .with_context(|| format!("{id}: bucket {value}"))?;
                }
                Resource::SecretPrefix => {
                    let scoped = format!("filetrail/{}/", provisioned.stack_name);
                    assert_eq!(value, scoped, "{id}: secrets are scoped by stack");
                }
                Resource::WriteSecretPrefix => panic!("{id} must not know where write-mode secrets are"),
            }
        }
    }

    // The CLI's merged view names the same resources.
    let cli = provisioned.cli_env(&template)?;
    let state = provisioned.resource("StateTable").map(|r| r.name.clone());
    assert_eq!(cli.get("FILETRAIL_STATE_TABLE").cloned(), state);
    let bucket = provisioned
        .resources
        .values()
        .find(|r| r.kind == ResourceKind::Bucket)
        .map(|r| r.name.clone());
    assert_eq!(cli.get("FILETRAIL_BUCKET").cloned(), bucket);
    Ok(())
}
