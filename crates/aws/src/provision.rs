//! Creates a template's tables, queues and bucket on the configured AWS endpoint (the local moto
//! server), and resolves functions' environment variables against what was created.
//!
//! Physical names are `{stack}-{LogicalId}` (buckets lowercase, as S3 requires), so two stacks can
//! share one endpoint. Provisioning is idempotent: resources that already exist are kept (queues
//! get the template's attributes again), so `infra/local/stack start` can run against a server
//! that already holds the stack.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{
    AttributeDefinition as DdbAttributeDefinition, BillingMode, GlobalSecondaryIndex as DdbGsi, KeySchemaElement,
    KeyType, PointInTimeRecoverySpecification, Projection as DdbProjection, ProjectionType, ScalarAttributeType,
    SseSpecification, TableStatus, TimeToLiveSpecification,
};
use aws_sdk_s3::types::{
    BucketVersioningStatus, PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule, VersioningConfiguration,
};
use aws_sdk_sqs::types::QueueAttributeName;
use serde::Serialize;

use crate::template::{BucketSpec, Expr, FunctionSpec, KeySchema, QueueSpec, TableSpec, Template, TemplateError};

/// Longest SQS queue name (SQS `CreateQueue` reference: "up to 80 characters").
pub const MAX_QUEUE_NAME_LEN: usize = 80;
/// Longest DynamoDB table name (DynamoDB naming rules: 3 to 255 characters).
pub const MAX_TABLE_NAME_LEN: usize = 255;
/// Longest S3 bucket name (S3 bucket naming rules: 3 to 63 characters).
pub const MAX_BUCKET_NAME_LEN: usize = 63;
/// How long to wait for a new table to become ACTIVE: 120 polls of 500 ms. moto creates tables
/// ACTIVE at once; DynamoDB takes seconds.
const TABLE_ACTIVE_POLLS: u32 = 120;
const TABLE_ACTIVE_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Why provisioning or resolution failed. Messages name the resource or variable and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(
        "{operation} for {resource} failed: {message} (fix: check that the AWS endpoint is running, e.g. \
         `infra/local/stack status`, and that AWS_ENDPOINT_URL and AWS_REGION point at it)"
    )]
    Aws {
        operation: &'static str,
        resource: String,
        message: String,
    },
    #[error("no AWS region is configured (fix: set AWS_REGION, e.g. AWS_REGION=us-east-1)")]
    NoRegion,
    #[error(
        "physical name `{name}` is invalid: {reason} (fix: choose a shorter stack name of letters, digits and `-`)"
    )]
    InvalidName { name: String, reason: String },
    #[error("cannot resolve {what}: {reason}")]
    Unresolved { what: String, reason: String },
}

fn aws_err<E>(operation: &'static str, resource: &str, err: E) -> ProvisionError
where
    E: std::error::Error,
{
    ProvisionError::Aws {
        operation,
        resource: resource.to_owned(),
        message: DisplayErrorContext(&err).to_string(),
    }
}

fn build_err(resource: &str, err: impl std::error::Error) -> ProvisionError {
    ProvisionError::Aws {
        operation: "building request",
        resource: resource.to_owned(),
        message: err.to_string(),
    }
}

/// What kind of resource a logical id became.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    Table,
    Queue,
    Bucket,
}

/// One provisioned resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhysicalResource {
    pub kind: ResourceKind,
    /// Table name, queue name or bucket name.
    pub name: String,
    pub arn: String,
    /// The queue URL (queues only).
    pub url: Option<String>,
}

/// What [`provision`] created: logical id → physical resource, plus what `!Ref` of parameters and
/// pseudo parameters yields on this endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provisioned {
    pub stack_name: String,
    pub region: String,
    pub account_id: String,
    pub partition: String,
    /// Parameter values in force: the template's defaults.
    pub parameters: BTreeMap<String, String>,
    pub resources: BTreeMap<String, PhysicalResource>,
}

impl Provisioned {
    /// The physical resource of a logical id.
    pub fn resource(&self, logical_id: &str) -> Option<&PhysicalResource> {
        self.resources.get(logical_id)
    }

    /// The URL of a provisioned queue.
    pub fn queue_url(&self, logical_id: &str) -> Option<&str> {
        self.resources.get(logical_id).and_then(|r| r.url.as_deref())
    }

    /// Resolves an expression as CloudFormation would in this stack: `!Ref` of a table or bucket
    /// yields its name, of a queue its URL, of a parameter its value; `!GetAtt X.Arn` the ARN;
    /// `!GetAtt Q.QueueName` / `Q.QueueUrl`; `!Sub` and `!Join` combine those. Fails with
    /// [`ProvisionError::Unresolved`] naming the reference that has no value here.
    pub fn resolve(&self, expr: &Expr) -> Result<String, ProvisionError> {
        match expr {
            Expr::Literal(s) => Ok(s.clone()),
            Expr::Ref(name) => self.resolve_ref(name),
            Expr::GetAtt { resource, attribute } => self.resolve_get_att(resource, attribute),
            Expr::Join { delimiter, parts } => Ok(parts
                .iter()
                .map(|p| self.resolve(p))
                .collect::<Result<Vec<_>, _>>()?
                .join(delimiter)),
            Expr::Sub { template, variables } => self.resolve_sub(template, variables),
            Expr::Unsupported { function } => Err(ProvisionError::Unresolved {
                what: function.clone(),
                reason: "the local stack does not evaluate this intrinsic; use Ref, GetAtt, Sub or Join".into(),
            }),
        }
    }

    fn resolve_ref(&self, name: &str) -> Result<String, ProvisionError> {
        if let Some(value) = self.parameters.get(name) {
            return Ok(value.clone());
        }
        match name {
            "AWS::Region" => return Ok(self.region.clone()),
            "AWS::AccountId" => return Ok(self.account_id.clone()),
            "AWS::Partition" => return Ok(self.partition.clone()),
            "AWS::StackName" => return Ok(self.stack_name.clone()),
            "AWS::URLSuffix" => return Ok("amazonaws.com".to_owned()),
            _ => {}
        }
        match self.resources.get(name) {
            Some(PhysicalResource {
                kind: ResourceKind::Queue,
                url: Some(url),
                ..
            }) => Ok(url.clone()),
            Some(resource) => Ok(resource.name.clone()),
            None => Err(ProvisionError::Unresolved {
                what: format!("!Ref {name}"),
                reason: format!(
                    "`{name}` is neither a parameter with a default nor a provisioned table, queue or bucket"
                ),
            }),
        }
    }

    fn resolve_get_att(&self, resource: &str, attribute: &str) -> Result<String, ProvisionError> {
        let unresolved = |reason: String| ProvisionError::Unresolved {
            what: format!("!GetAtt {resource}.{attribute}"),
            reason,
        };
        let r = self
            .resources
            .get(resource)
            .ok_or_else(|| unresolved(format!("`{resource}` is not a provisioned table, queue or bucket")))?;
        match (r.kind, attribute) {
            (_, "Arn") => Ok(r.arn.clone()),
            (ResourceKind::Queue, "QueueName") => Ok(r.name.clone()),
            (ResourceKind::Queue, "QueueUrl") => r.url.clone().ok_or_else(|| unresolved("queue has no URL".into())),
            (kind, _) => Err(unresolved(format!(
                "attribute `{attribute}` of a {kind:?} is not available locally"
            ))),
        }
    }

    fn resolve_sub(&self, template: &str, variables: &BTreeMap<String, Expr>) -> Result<String, ProvisionError> {
        let mut out = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or_else(|| ProvisionError::Unresolved {
                what: format!("!Sub {template:?}"),
                reason: "a `${` has no closing `}`".into(),
            })?;
            let name = &after[..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some(local) = variables.get(name) {
                out.push_str(&self.resolve(local)?);
            } else if let Some((resource, attribute)) = name.split_once('.') {
                out.push_str(&self.resolve_get_att(resource, attribute)?);
            } else {
                out.push_str(&self.resolve_ref(name)?);
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// The environment a function gets in AWS, resolved for this stack: Globals' variables merged
    /// with the function's. Fails on the first variable whose value cannot be resolved, naming it.
    pub fn resolve_env(&self, function: &FunctionSpec) -> Result<HashMap<String, String>, ProvisionError> {
        function
            .environment
            .iter()
            .map(|(name, expr)| {
                self.resolve(expr)
                    .map(|value| (name.clone(), value))
                    .map_err(|e| ProvisionError::Unresolved {
                        what: format!("{}.Environment.Variables.{name}", function.logical_id),
                        reason: e.to_string(),
                    })
            })
            .collect()
    }

    /// The `FILETRAIL_*` settings of every function, merged: what the CLI needs to address the
    /// same resources as the functions. When the template has exactly one bucket and no function
    /// names one, it is added as `FILETRAIL_BUCKET`; the write-mode secret prefix, which no
    /// function may know, is added as the stack's `WriteSecretPrefix` output has it. Fails if two
    /// functions give one variable different values.
    pub fn cli_env(&self, template: &Template) -> Result<BTreeMap<String, String>, ProvisionError> {
        let mut merged = BTreeMap::new();
        for function in template.functions.values() {
            for (name, value) in self.resolve_env(function)? {
                if !name.starts_with("FILETRAIL_") {
                    continue;
                }
                if let Some(previous) = merged.get(&name)
                    && previous != &value
                {
                    return Err(ProvisionError::Unresolved {
                        what: name,
                        reason: format!("functions disagree: `{previous}` vs `{value}`"),
                    });
                }
                merged.insert(name, value);
            }
        }
        merged.insert(
            crate::config::WRITE_SECRET_PREFIX_VAR.to_owned(),
            crate::config::write_secret_prefix(&self.stack_name),
        );
        if !merged.contains_key(crate::config::BUCKET_VAR) {
            let mut buckets = self.resources.values().filter(|r| r.kind == ResourceKind::Bucket);
            if let (Some(only), None) = (buckets.next(), buckets.next()) {
                merged.insert(crate::config::BUCKET_VAR.to_owned(), only.name.clone());
            }
        }
        Ok(merged)
    }
}

/// The physical name of a table or queue in a stack: `{stack}-{LogicalId}` (`.fifo` appended for
/// FIFO queues, as SQS requires).
pub fn physical_name(stack_name: &str, logical_id: &str) -> String {
    format!("{stack_name}-{logical_id}")
}

/// The physical name of a bucket: `{stack}-{logicalid}` in lowercase (S3 names are lowercase).
pub fn bucket_name(stack_name: &str, logical_id: &str) -> String {
    physical_name(stack_name, logical_id).to_ascii_lowercase()
}

fn check_name(name: &str, max: usize) -> Result<(), ProvisionError> {
    let invalid = |reason: String| ProvisionError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if name.len() > max {
        return Err(invalid(format!("longer than {max} characters")));
    }
    if name.len() < 3 {
        return Err(invalid("shorter than 3 characters".into()));
    }
    let body = name.strip_suffix(".fifo").unwrap_or(name);
    if !body.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(invalid("only letters, digits and `-` are allowed".into()));
    }
    Ok(())
}

/// Creates every table, queue and bucket of `template` on the endpoint `sdk` is configured for,
/// named `{stack_name}-{LogicalId}`, with the template's key schemas, indexes, billing mode, TTL,
/// point-in-time recovery, encryption, visibility timeouts, retention and redrive policies (the
/// dead-letter queue's ARN and `maxReceiveCount`).
///
/// Idempotent: an existing table or bucket is kept as it is; an existing queue gets the template's
/// attributes again. Fails on the first AWS call that fails, naming the resource.
pub async fn provision(sdk: &SdkConfig, template: &Template, stack_name: &str) -> Result<Provisioned, ProvisionError> {
    let region = sdk.region().ok_or(ProvisionError::NoRegion)?.to_string();
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    let sqs = aws_sdk_sqs::Client::new(sdk);
    // A custom endpoint (moto) serves buckets by path, not by virtual host.
    let s3_config = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(sdk.endpoint_url().is_some())
        .build();
    let s3 = aws_sdk_s3::Client::from_conf(s3_config);

    let mut resources = BTreeMap::new();
    for table in template.tables.values() {
        let resource = provision_table(&ddb, table, stack_name).await?;
        resources.insert(table.logical_id.clone(), resource);
    }
    for queue in template.queues_in_creation_order()? {
        let resource = provision_queue(&sqs, queue, stack_name, &resources).await?;
        resources.insert(queue.logical_id.clone(), resource);
    }

    let (partition, account_id) = resources
        .values()
        .find_map(|r| {
            let mut parts = r.arn.split(':');
            let partition = parts.nth(1)?;
            let account = parts.nth(2)?;
            (!account.is_empty()).then(|| (partition.to_owned(), account.to_owned()))
        })
        .unwrap_or_else(|| ("aws".to_owned(), "123456789012".to_owned()));

    for bucket in template.buckets.values() {
        let resource = provision_bucket(&s3, bucket, stack_name, &region, &partition).await?;
        configure_notifications(&s3, bucket, &resource.name, &resources).await?;
        resources.insert(bucket.logical_id.clone(), resource);
    }

    tracing::info!(
        stack = stack_name,
        resources = resources.len(),
        "provisioned the template's resources"
    );
    Ok(Provisioned {
        stack_name: stack_name.to_owned(),
        region,
        account_id,
        partition,
        parameters: template.parameter_defaults(),
        resources,
    })
}

fn key_elements(key: &KeySchema, resource: &str) -> Result<Vec<KeySchemaElement>, ProvisionError> {
    let mut elements = vec![
        KeySchemaElement::builder()
            .attribute_name(&key.hash)
            .key_type(KeyType::Hash)
            .build()
            .map_err(|e| build_err(resource, e))?,
    ];
    if let Some(range) = &key.range {
        elements.push(
            KeySchemaElement::builder()
                .attribute_name(range)
                .key_type(KeyType::Range)
                .build()
                .map_err(|e| build_err(resource, e))?,
        );
    }
    Ok(elements)
}

async fn provision_table(
    ddb: &aws_sdk_dynamodb::Client,
    table: &TableSpec,
    stack_name: &str,
) -> Result<PhysicalResource, ProvisionError> {
    let name = physical_name(stack_name, &table.logical_id);
    check_name(&name, MAX_TABLE_NAME_LEN)?;

    let existing = match ddb.describe_table().table_name(&name).send().await {
        Ok(out) => out.table,
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            None
        }
        Err(err) => return Err(aws_err("DescribeTable", &name, err)),
    };
    if existing.is_none() {
        let attributes = table
            .attribute_definitions
            .iter()
            .map(|a| {
                DdbAttributeDefinition::builder()
                    .attribute_name(&a.attribute_name)
                    .attribute_type(ScalarAttributeType::from(a.attribute_type.as_str()))
                    .build()
                    .map_err(|e| build_err(&name, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let indexes = table
            .global_secondary_indexes
            .iter()
            .map(|g| {
                let projection = DdbProjection::builder()
                    .projection_type(ProjectionType::from(g.projection.projection_type.as_str()))
                    .set_non_key_attributes(
                        (!g.projection.non_key_attributes.is_empty()).then(|| g.projection.non_key_attributes.clone()),
                    )
                    .build();
                DdbGsi::builder()
                    .index_name(&g.name)
                    .set_key_schema(Some(key_elements(&g.key_schema, &name)?))
                    .projection(projection)
                    .build()
                    .map_err(|e| build_err(&name, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut request = ddb
            .create_table()
            .table_name(&name)
            .set_attribute_definitions(Some(attributes))
            .set_key_schema(Some(key_elements(&table.key_schema, &name)?))
            .set_global_secondary_indexes((!indexes.is_empty()).then_some(indexes))
            .billing_mode(BillingMode::from(table.billing_mode.as_str()));
        if table.sse_enabled {
            request = request.sse_specification(SseSpecification::builder().enabled(true).build());
        }
        match request.send().await {
            Ok(_) => tracing::info!(table = %name, "created table"),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_resource_in_use_exception()) => {}
            Err(err) => return Err(aws_err("CreateTable", &name, err)),
        }
    }
    let description = wait_until_active(ddb, &name).await?;

    if table.point_in_time_recovery {
        let spec = PointInTimeRecoverySpecification::builder()
            .point_in_time_recovery_enabled(true)
            .build()
            .map_err(|e| build_err(&name, e))?;
        ddb.update_continuous_backups()
            .table_name(&name)
            .point_in_time_recovery_specification(spec)
            .send()
            .await
            .map_err(|e| aws_err("UpdateContinuousBackups", &name, e))?;
    }
    if let Some(ttl) = &table.time_to_live {
        let spec = TimeToLiveSpecification::builder()
            .attribute_name(&ttl.attribute_name)
            .enabled(ttl.enabled)
            .build()
            .map_err(|e| build_err(&name, e))?;
        if let Err(err) = ddb
            .update_time_to_live()
            .table_name(&name)
            .time_to_live_specification(spec)
            .send()
            .await
        {
            // Re-applying the same TTL setting is a ValidationException ("already enabled").
            let already = err.as_service_error().map(|e| e.to_string()).unwrap_or_default();
            if !already.contains("already") {
                return Err(aws_err("UpdateTimeToLive", &name, err));
            }
        }
    }
    let arn = description
        .table_arn()
        .map(str::to_owned)
        .ok_or_else(|| ProvisionError::Aws {
            operation: "DescribeTable",
            resource: name.clone(),
            message: "the response has no TableArn".into(),
        })?;
    Ok(PhysicalResource {
        kind: ResourceKind::Table,
        name,
        arn,
        url: None,
    })
}

async fn wait_until_active(
    ddb: &aws_sdk_dynamodb::Client,
    name: &str,
) -> Result<aws_sdk_dynamodb::types::TableDescription, ProvisionError> {
    for _ in 0..TABLE_ACTIVE_POLLS {
        let out = ddb
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(|e| aws_err("DescribeTable", name, e))?;
        if let Some(table) = out.table
            && table.table_status() == Some(&TableStatus::Active)
        {
            return Ok(table);
        }
        tokio::time::sleep(TABLE_ACTIVE_POLL_INTERVAL).await;
    }
    Err(ProvisionError::Aws {
        operation: "DescribeTable",
        resource: name.to_owned(),
        message: "the table did not become ACTIVE in time".into(),
    })
}

fn queue_attributes(
    queue: &QueueSpec,
    created: &BTreeMap<String, PhysicalResource>,
) -> Result<HashMap<QueueAttributeName, String>, ProvisionError> {
    let mut attributes = HashMap::from([
        (
            QueueAttributeName::VisibilityTimeout,
            queue.visibility_timeout_secs.to_string(),
        ),
        (
            QueueAttributeName::MessageRetentionPeriod,
            queue.message_retention_secs.to_string(),
        ),
    ]);
    if let Some(delay) = queue.delay_secs {
        attributes.insert(QueueAttributeName::DelaySeconds, delay.to_string());
    }
    if let Some(wait) = queue.receive_wait_secs {
        attributes.insert(QueueAttributeName::ReceiveMessageWaitTimeSeconds, wait.to_string());
    }
    if queue.sqs_managed_sse {
        attributes.insert(QueueAttributeName::SqsManagedSseEnabled, "true".to_owned());
    }
    if let Some(redrive) = &queue.redrive {
        let dlq = created
            .get(&redrive.dead_letter_queue)
            .ok_or_else(|| ProvisionError::Unresolved {
                what: format!("{}.RedrivePolicy", queue.logical_id),
                reason: format!(
                    "dead-letter queue `{}` was not provisioned first",
                    redrive.dead_letter_queue
                ),
            })?;
        let policy = serde_json::json!({
            "deadLetterTargetArn": dlq.arn,
            "maxReceiveCount": redrive.max_receive_count,
        });
        attributes.insert(QueueAttributeName::RedrivePolicy, policy.to_string());
    }
    Ok(attributes)
}

async fn provision_queue(
    sqs: &aws_sdk_sqs::Client,
    queue: &QueueSpec,
    stack_name: &str,
    created: &BTreeMap<String, PhysicalResource>,
) -> Result<PhysicalResource, ProvisionError> {
    let mut name = physical_name(stack_name, &queue.logical_id);
    if queue.fifo {
        name.push_str(".fifo");
    }
    check_name(&name, MAX_QUEUE_NAME_LEN)?;
    let attributes = queue_attributes(queue, created)?;

    let url = match sqs.get_queue_url().queue_name(&name).send().await {
        Ok(out) => {
            let url = out.queue_url.ok_or_else(|| ProvisionError::Aws {
                operation: "GetQueueUrl",
                resource: name.clone(),
                message: "the response has no QueueUrl".into(),
            })?;
            sqs.set_queue_attributes()
                .queue_url(&url)
                .set_attributes(Some(attributes))
                .send()
                .await
                .map_err(|e| aws_err("SetQueueAttributes", &name, e))?;
            url
        }
        Err(err) if err.as_service_error().is_some_and(|e| e.is_queue_does_not_exist()) => {
            let mut create_attributes = attributes;
            if queue.fifo {
                create_attributes.insert(QueueAttributeName::FifoQueue, "true".to_owned());
            }
            let out = sqs
                .create_queue()
                .queue_name(&name)
                .set_attributes(Some(create_attributes))
                .send()
                .await
                .map_err(|e| aws_err("CreateQueue", &name, e))?;
            tracing::info!(queue = %name, "created queue");
            out.queue_url.ok_or_else(|| ProvisionError::Aws {
                operation: "CreateQueue",
                resource: name.clone(),
                message: "the response has no QueueUrl".into(),
            })?
        }
        Err(err) => return Err(aws_err("GetQueueUrl", &name, err)),
    };
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| aws_err("GetQueueAttributes", &name, e))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| ProvisionError::Aws {
            operation: "GetQueueAttributes",
            resource: name.clone(),
            message: "the response has no QueueArn".into(),
        })?;
    Ok(PhysicalResource {
        kind: ResourceKind::Queue,
        name,
        arn,
        url: Some(url),
    })
}

async fn provision_bucket(
    s3: &aws_sdk_s3::Client,
    bucket: &BucketSpec,
    stack_name: &str,
    region: &str,
    partition: &str,
) -> Result<PhysicalResource, ProvisionError> {
    let name = bucket_name(stack_name, &bucket.logical_id);
    check_name(&name, MAX_BUCKET_NAME_LEN)?;
    let exists = match s3.head_bucket().bucket(&name).send().await {
        Ok(_) => true,
        Err(err) if err.as_service_error().is_some_and(|e| e.is_not_found()) => false,
        Err(err) => return Err(aws_err("HeadBucket", &name, err)),
    };
    if !exists {
        let mut request = s3.create_bucket().bucket(&name);
        // us-east-1 is the one region that takes no location constraint (S3 CreateBucket reference).
        if region != "us-east-1" {
            request = request.create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(region))
                    .build(),
            );
        }
        match request.send().await {
            Ok(_) => tracing::info!(bucket = %name, "created bucket"),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_bucket_already_owned_by_you()) => {}
            Err(err) => return Err(aws_err("CreateBucket", &name, err)),
        }
    }
    if bucket.versioning {
        s3.put_bucket_versioning()
            .bucket(&name)
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| aws_err("PutBucketVersioning", &name, e))?;
    }
    if let Some(algorithm) = &bucket.encryption {
        let default = ServerSideEncryptionByDefault::builder()
            .sse_algorithm(ServerSideEncryption::from(algorithm.as_str()))
            .build()
            .map_err(|e| build_err(&name, e))?;
        let config = ServerSideEncryptionConfiguration::builder()
            .rules(
                ServerSideEncryptionRule::builder()
                    .apply_server_side_encryption_by_default(default)
                    .build(),
            )
            .build()
            .map_err(|e| build_err(&name, e))?;
        s3.put_bucket_encryption()
            .bucket(&name)
            .server_side_encryption_configuration(config)
            .send()
            .await
            .map_err(|e| aws_err("PutBucketEncryption", &name, e))?;
    }
    if bucket.block_public_access {
        s3.put_public_access_block()
            .bucket(&name)
            .public_access_block_configuration(
                PublicAccessBlockConfiguration::builder()
                    .block_public_acls(true)
                    .block_public_policy(true)
                    .ignore_public_acls(true)
                    .restrict_public_buckets(true)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| aws_err("PutPublicAccessBlock", &name, e))?;
    }
    configure_lifecycle(s3, bucket, &name).await?;
    Ok(PhysicalResource {
        kind: ResourceKind::Bucket,
        arn: format!("arn:{partition}:s3:::{name}"),
        name,
        url: None,
    })
}

/// Puts the bucket's enabled lifecycle rules (replacing any it had).
async fn configure_lifecycle(s3: &aws_sdk_s3::Client, bucket: &BucketSpec, name: &str) -> Result<(), ProvisionError> {
    use aws_sdk_s3::types::{
        AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus, LifecycleExpiration,
        LifecycleRule, LifecycleRuleFilter, NoncurrentVersionExpiration,
    };
    if bucket.lifecycle.is_empty() {
        return Ok(());
    }
    let mut config = BucketLifecycleConfiguration::builder();
    for rule in &bucket.lifecycle {
        let mut built = LifecycleRule::builder()
            .id(&rule.id)
            .status(ExpirationStatus::Enabled)
            .filter(
                LifecycleRuleFilter::builder()
                    .prefix(rule.prefix.clone().unwrap_or_default())
                    .build(),
            );
        if let Some(days) = rule.expiration_days {
            built = built.expiration(LifecycleExpiration::builder().days(days as i32).build());
        }
        if let Some(days) = rule.noncurrent_days {
            built = built.noncurrent_version_expiration(
                NoncurrentVersionExpiration::builder()
                    .noncurrent_days(days as i32)
                    .build(),
            );
        }
        if let Some(days) = rule.abort_multipart_days {
            built = built.abort_incomplete_multipart_upload(
                AbortIncompleteMultipartUpload::builder()
                    .days_after_initiation(days as i32)
                    .build(),
            );
        }
        config = config.rules(built.build().map_err(|e| build_err(name, e))?);
    }
    s3.put_bucket_lifecycle_configuration()
        .bucket(name)
        .lifecycle_configuration(config.build().map_err(|e| build_err(name, e))?)
        .send()
        .await
        .map_err(|e| aws_err("PutBucketLifecycleConfiguration", name, e))?;
    Ok(())
}

/// Sends the bucket's object events to its queues, as `NotificationConfiguration` declares
/// (replacing any configuration the bucket had).
async fn configure_notifications(
    s3: &aws_sdk_s3::Client,
    bucket: &BucketSpec,
    name: &str,
    resources: &BTreeMap<String, PhysicalResource>,
) -> Result<(), ProvisionError> {
    use aws_sdk_s3::types::{
        Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter,
        QueueConfiguration, S3KeyFilter,
    };
    if bucket.queue_notifications.is_empty() {
        return Ok(());
    }
    let mut config = NotificationConfiguration::builder();
    for notification in &bucket.queue_notifications {
        let queue = resources
            .get(&notification.queue)
            .filter(|r| r.kind == ResourceKind::Queue)
            .ok_or_else(|| ProvisionError::Unresolved {
                what: format!("the notification queue of bucket {}", bucket.logical_id),
                reason: format!("`{}` is not a queue of the template", notification.queue),
            })?;
        let mut rules = Vec::new();
        for (rule, value) in [
            (FilterRuleName::Prefix, &notification.prefix),
            (FilterRuleName::Suffix, &notification.suffix),
        ] {
            if let Some(value) = value {
                rules.push(FilterRule::builder().name(rule).value(value).build());
            }
        }
        let mut queue_config = QueueConfiguration::builder().queue_arn(&queue.arn).set_events(Some(
            notification.events.iter().map(|e| Event::from(e.as_str())).collect(),
        ));
        if !rules.is_empty() {
            queue_config = queue_config.filter(
                NotificationConfigurationFilter::builder()
                    .key(S3KeyFilter::builder().set_filter_rules(Some(rules)).build())
                    .build(),
            );
        }
        config = config.queue_configurations(queue_config.build().map_err(|e| build_err(name, e))?);
    }
    s3.put_bucket_notification_configuration()
        .bucket(name)
        .notification_configuration(config.build())
        .send()
        .await
        .map_err(|e| aws_err("PutBucketNotificationConfiguration", name, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provisioned() -> Provisioned {
        Provisioned {
            stack_name: "ft".into(),
            region: "us-east-1".into(),
            account_id: "123456789012".into(),
            partition: "aws".into(),
            parameters: BTreeMap::from([("LogLevel".to_owned(), "info".to_owned())]),
            resources: BTreeMap::from([
                (
                    "Q".to_owned(),
                    PhysicalResource {
                        kind: ResourceKind::Queue,
                        name: "ft-Q".into(),
                        arn: "arn:aws:sqs:us-east-1:123456789012:ft-Q".into(),
                        url: Some("http://127.0.0.1:1/123456789012/ft-Q".into()),
                    },
                ),
                (
                    "T".to_owned(),
                    PhysicalResource {
                        kind: ResourceKind::Table,
                        name: "ft-T".into(),
                        arn: "arn:aws:dynamodb:us-east-1:123456789012:table/ft-T".into(),
                        url: None,
                    },
                ),
            ]),
        }
    }

    #[test]
    fn ref_of_a_queue_is_its_url_and_of_a_table_its_name() {
        let p = provisioned();
        assert_eq!(
            p.resolve(&Expr::Ref("Q".into())).ok().as_deref(),
            Some("http://127.0.0.1:1/123456789012/ft-Q")
        );
        assert_eq!(p.resolve(&Expr::Ref("T".into())).ok().as_deref(), Some("ft-T"));
        assert_eq!(p.resolve(&Expr::Ref("LogLevel".into())).ok().as_deref(), Some("info"));
    }

    #[test]
    fn sub_resolves_pseudo_parameters_attributes_and_escapes() {
        let p = provisioned();
        let expr = Expr::Sub {
            template: "arn:${AWS::Partition}:x:${AWS::Region}:${AWS::AccountId}:${T}/${Q.QueueName}/${!Literal}".into(),
            variables: BTreeMap::new(),
        };
        assert_eq!(
            p.resolve(&expr).ok().as_deref(),
            Some("arn:aws:x:us-east-1:123456789012:ft-T/ft-Q/${Literal}")
        );
    }

    #[test]
    fn unknown_reference_fails_naming_it() {
        let p = provisioned();
        let err = p
            .resolve(&Expr::Ref("Nope".into()))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("!Ref Nope"), "{err}");
        let err = p
            .resolve(&Expr::Unsupported {
                function: "Fn::If".into(),
            })
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("Fn::If"), "{err}");
    }

    #[test]
    fn physical_names_are_checked_against_service_limits() {
        assert!(check_name(&physical_name("ft", "IndexQueue"), MAX_QUEUE_NAME_LEN).is_ok());
        assert!(check_name(&physical_name(&"x".repeat(80), "IndexQueue"), MAX_QUEUE_NAME_LEN).is_err());
        assert!(check_name("ft_bad name", MAX_TABLE_NAME_LEN).is_err());
        assert_eq!(bucket_name("Ft", "DeploymentBucket"), "ft-deploymentbucket");
    }
}
