//! Shared moto server, clients, and tables/queues laid out as template.yaml provisions them.

use anyhow::Context;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType,
};
use chrono::{DateTime, Utc};
use filetrail_aws::MotoServer;
use filetrail_aws::events::{
    ACTOR_PK, BY_ACTOR, BY_DAY, BY_EXTERNAL, BY_FILE, BY_INSERTED, BY_MD5, BY_NAME, BY_OWNER, BY_PATH, BY_SHA256,
    DAY_PK, EVENT_KEY, EXPORT_INCLUDED, EXTERNAL_PK, FILE_PK, INSERTED_PK, INSERTED_SK, MD5, NAME_PK, NAME_SK,
    OBSERVED_SK, OWNER_PK, PATH_PK, PATH_SK, SEARCH_INCLUDED, SHA256,
};
use filetrail_aws::inventory::{DRIVE_ID, ITEM_ID};
use filetrail_aws::state::{GSI1, GSI1_INCLUDED, GSI1_PK, GSI1_SK, GSI2, GSI2_PK, PK, SK};
use filetrail_core::model::{DriveRecord, DriveState, IndexProgress, InventoryRow, UserRef};
use tokio::sync::OnceCell;

static MOTO: OnceCell<MotoServer> = OnceCell::const_new();

/// The moto server of this test binary, started on first use. It stops when the binary exits.
pub async fn moto() -> anyhow::Result<&'static MotoServer> {
    MOTO.get_or_try_init(MotoServer::start).await
}

/// SDK clients for the shared moto server. Built per test: an SDK client's connection pool
/// belongs to the runtime of the test that made it.
pub struct Aws {
    pub dynamo: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub s3: aws_sdk_s3::Client,
}

pub async fn aws() -> anyhow::Result<Aws> {
    let config = moto().await?.sdk_config().await;
    Ok(Aws {
        dynamo: aws_sdk_dynamodb::Client::new(&config),
        sqs: aws_sdk_sqs::Client::new(&config),
        secrets: aws_sdk_secretsmanager::Client::new(&config),
        s3: filetrail_aws::s3_client(&config),
    })
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn attr(name: &str) -> anyhow::Result<AttributeDefinition> {
    Ok(AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()?)
}

fn key(name: &str, kind: KeyType) -> anyhow::Result<KeySchemaElement> {
    Ok(KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()?)
}

/// Creates a state table: `pk`/`sk`, GSI `gsi1` on `gsi1pk`/`gsi1sk` projecting keys plus
/// `owner_upn` and `state`, GSI `gsi2` on `gsi2pk` (keys only), on demand.
pub async fn create_state_table(client: &aws_sdk_dynamodb::Client) -> anyhow::Result<String> {
    let name = unique("ft-state");
    let projection = Projection::builder()
        .projection_type(ProjectionType::Include)
        .set_non_key_attributes(Some(GSI1_INCLUDED.iter().map(|a| (*a).to_owned()).collect()))
        .build();
    let gsi = GlobalSecondaryIndex::builder()
        .index_name(GSI1)
        .key_schema(key(GSI1_PK, KeyType::Hash)?)
        .key_schema(key(GSI1_SK, KeyType::Range)?)
        .projection(projection)
        .build()?;
    let gsi2 = GlobalSecondaryIndex::builder()
        .index_name(GSI2)
        .key_schema(key(GSI2_PK, KeyType::Hash)?)
        .projection(Projection::builder().projection_type(ProjectionType::KeysOnly).build())
        .build()?;
    client
        .create_table()
        .table_name(&name)
        .attribute_definitions(attr(PK)?)
        .attribute_definitions(attr(SK)?)
        .attribute_definitions(attr(GSI1_PK)?)
        .attribute_definitions(attr(GSI1_SK)?)
        .attribute_definitions(attr(GSI2_PK)?)
        .key_schema(key(PK, KeyType::Hash)?)
        .key_schema(key(SK, KeyType::Range)?)
        .global_secondary_indexes(gsi)
        .global_secondary_indexes(gsi2)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .with_context(|| format!("create state table {name}"))?;
    Ok(name)
}

/// Creates an inventory table: `drive_id`/`item_id`, on demand.
pub async fn create_inventory_table(client: &aws_sdk_dynamodb::Client) -> anyhow::Result<String> {
    let name = unique("ft-inventory");
    client
        .create_table()
        .table_name(&name)
        .attribute_definitions(attr(DRIVE_ID)?)
        .attribute_definitions(attr(ITEM_ID)?)
        .attribute_definitions(attr(filetrail_aws::sharing::EXPOSED_PK)?)
        .attribute_definitions(attr(filetrail_aws::sharing::EXPOSED_SK)?)
        .key_schema(key(DRIVE_ID, KeyType::Hash)?)
        .key_schema(key(ITEM_ID, KeyType::Range)?)
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(filetrail_aws::sharing::BY_EXPOSURE)
                .key_schema(key(filetrail_aws::sharing::EXPOSED_PK, KeyType::Hash)?)
                .key_schema(key(filetrail_aws::sharing::EXPOSED_SK, KeyType::Range)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::Include)
                        .non_key_attributes(filetrail_aws::sharing::SHARING)
                        .build(),
                )
                .build()?,
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .with_context(|| format!("create inventory table {name}"))?;
    Ok(name)
}

/// Creates an events table: `event_key`, the search indexes on `observed_sk` projecting
/// `event_type` and `low_signal`, `by_inserted` projecting `doc` and `hash`, on demand.
pub async fn create_events_table(client: &aws_sdk_dynamodb::Client) -> anyhow::Result<String> {
    let name = unique("ft-events");
    let include = |attrs: &[&str]| {
        Projection::builder()
            .projection_type(ProjectionType::Include)
            .set_non_key_attributes(Some(attrs.iter().map(|a| (*a).to_owned()).collect()))
            .build()
    };
    let mut request = client
        .create_table()
        .table_name(&name)
        .key_schema(key(EVENT_KEY, KeyType::Hash)?)
        .billing_mode(BillingMode::PayPerRequest);
    for a in [
        EVENT_KEY,
        ACTOR_PK,
        OWNER_PK,
        FILE_PK,
        SHA256,
        MD5,
        OBSERVED_SK,
        INSERTED_PK,
        INSERTED_SK,
        DAY_PK,
        NAME_PK,
        NAME_SK,
        PATH_PK,
        PATH_SK,
        EXTERNAL_PK,
    ] {
        request = request.attribute_definitions(attr(a)?);
    }
    for (index, pk, sk) in [(BY_NAME, NAME_PK, NAME_SK), (BY_PATH, PATH_PK, PATH_SK)] {
        let mut included = SEARCH_INCLUDED.to_vec();
        included.push(OBSERVED_SK);
        request = request.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(index)
                .key_schema(key(pk, KeyType::Hash)?)
                .key_schema(key(sk, KeyType::Range)?)
                .projection(include(&included))
                .build()?,
        );
    }
    for (index, pk) in [
        (BY_ACTOR, ACTOR_PK),
        (BY_OWNER, OWNER_PK),
        (BY_FILE, FILE_PK),
        (BY_SHA256, SHA256),
        (BY_MD5, MD5),
        (BY_DAY, DAY_PK),
        (BY_EXTERNAL, EXTERNAL_PK),
    ] {
        request = request.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(index)
                .key_schema(key(pk, KeyType::Hash)?)
                .key_schema(key(OBSERVED_SK, KeyType::Range)?)
                .projection(include(&SEARCH_INCLUDED))
                .build()?,
        );
    }
    request = request.global_secondary_indexes(
        GlobalSecondaryIndex::builder()
            .index_name(BY_INSERTED)
            .key_schema(key(INSERTED_PK, KeyType::Hash)?)
            .key_schema(key(INSERTED_SK, KeyType::Range)?)
            .projection(include(&EXPORT_INCLUDED))
            .build()?,
    );
    request
        .send()
        .await
        .with_context(|| format!("create events table {name}"))?;
    Ok(name)
}

/// Creates a bucket and returns its name.
pub async fn create_bucket(client: &aws_sdk_s3::Client) -> anyhow::Result<String> {
    let name = unique("ft-bucket");
    client
        .create_bucket()
        .bucket(&name)
        .send()
        .await
        .with_context(|| format!("create bucket {name}"))?;
    Ok(name)
}

/// Creates a standard queue and returns its URL.
pub async fn create_queue(client: &aws_sdk_sqs::Client) -> anyhow::Result<String> {
    let name = unique("ft-queue");
    let out = client
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .with_context(|| format!("create queue {name}"))?;
    out.queue_url.context("CreateQueue returned no URL")
}

/// A time with sub-second digits, to prove timestamps keep their precision.
pub fn at(rfc3339: &str) -> anyhow::Result<DateTime<Utc>> {
    Ok(DateTime::parse_from_rfc3339(rfc3339)?.with_timezone(&Utc))
}

pub fn drive(connection: &str, drive_id: &str, state: DriveState) -> anyhow::Result<DriveRecord> {
    Ok(DriveRecord {
        connection: connection.to_owned(),
        drive_id: drive_id.to_owned(),
        owner_id: format!("user-{drive_id}"),
        owner_upn: format!("{drive_id}@contoso.com"),
        web_url: Some(format!("https://contoso-my.sharepoint.com/personal/{drive_id}")),
        state,
        discovered_at: at("2026-11-22T08:00:00.123456Z")?,
        index: IndexProgress::default(),
        parked: None,
    })
}

pub fn row(drive_id: &str, item_id: &str, path: &str, generation: u64) -> anyhow::Result<InventoryRow> {
    let name = path.rsplit('/').next().unwrap_or_default().to_owned();
    Ok(InventoryRow {
        list_item_uid: None,
        drive_id: drive_id.to_owned(),
        item_id: item_id.to_owned(),
        connection: "contoso".into(),
        name,
        path: path.to_owned(),
        parent_id: Some("root".into()),
        is_folder: false,
        size: 1234,
        created_at: Some(at("2026-01-02T03:04:05Z")?),
        modified_at: Some(at("2026-02-03T04:05:06.789Z")?),
        etag: Some(format!("\"{{{item_id}}},1\"")),
        ctag: Some(format!("\"c:{{{item_id}}},1\"")),
        created_by: Some(UserRef {
            id: Some("u1".into()),
            display_name: Some("Adele Vance".into()),
            email: Some("adele@contoso.com".into()),
        }),
        modified_by: Some(UserRef {
            id: None,
            display_name: Some("SharePoint App".into()),
            email: None,
        }),
        mime_type: Some("application/pdf".into()),
        md5: None,
        sha256: None,
        hash_unavailable: Some(filetrail_core::model::HASH_NOT_MODIFIED_SINCE_INITIAL_INDEXING.into()),
        generation,
        indexed_at: at("2026-11-22T09:00:00.5Z")?,
    })
}

/// The error of a call that must fail.
pub fn failure<T: std::fmt::Debug, E>(result: Result<T, E>, what: &str) -> anyhow::Result<E> {
    match result {
        Ok(value) => anyhow::bail!("{what}: expected an error, got {value:?}"),
        Err(err) => Ok(err),
    }
}
