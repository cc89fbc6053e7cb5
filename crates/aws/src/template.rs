//! A model of `template.yaml`, the one source of truth for what filetrail deploys.
//!
//! The local stack provisions its tables, queues and bucket from this model, and the local runner
//! wires functions to queues and schedules from it, so a local run sees the same resources, event
//! sources and environment as the functions do in AWS. Only what those two need is modelled; the
//! rest of the template (IAM policies, alarms, log groups) is ignored here and checked by
//! `sam validate --lint` and `cfn-lint` instead.
//!
//! CloudFormation intrinsics arrive from YAML either in short form (`!Ref X`, `!GetAtt X.Arn`,
//! `!Sub "…"`, which serde_yaml yields as tagged values) or in long form (`{Ref: X}`,
//! `{"Fn::GetAtt": [X, Arn]}`); both become an [`Expr`] that [`crate::provision::Provisioned`]
//! resolves against the provisioned resources.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde_yaml::Value;

mod conditions;
pub mod policy;

/// `AWS::Serverless::Function` `Timeout` when neither the function nor Globals set one
/// (SAM specification: "Default: 3").
pub const DEFAULT_FUNCTION_TIMEOUT_SECS: u32 = 3;
/// `MemorySize` default (SAM specification: "Default: 128").
pub const DEFAULT_FUNCTION_MEMORY_MB: u32 = 128;
/// `VisibilityTimeout` of an `AWS::SQS::Queue` that sets none (CloudFormation reference: "default
/// is 30 seconds").
pub const DEFAULT_QUEUE_VISIBILITY_TIMEOUT_SECS: u32 = 30;
/// `MessageRetentionPeriod` default (CloudFormation reference: "345,600 seconds (4 days)").
pub const DEFAULT_QUEUE_RETENTION_SECS: u32 = 345_600;
/// `BatchSize` of a SAM `SQS` event that sets none (SAM specification: "Default: 10").
pub const DEFAULT_SQS_BATCH_SIZE: u32 = 10;
/// Largest `BatchSize` without a batching window; larger batches need
/// `MaximumBatchingWindowInSeconds` (Lambda `CreateEventSourceMapping` reference).
pub const MAX_SQS_BATCH_SIZE_WITHOUT_WINDOW: u32 = 10;

const SERVERLESS_FUNCTION: &str = "AWS::Serverless::Function";
const DYNAMODB_TABLE: &str = "AWS::DynamoDB::Table";
const SQS_QUEUE: &str = "AWS::SQS::Queue";
const S3_BUCKET: &str = "AWS::S3::Bucket";

/// Why a template could not be read or modelled. Each message names the file or the property path
/// (`Resources.IndexQueue.Properties.RedrivePolicy`) and what to change.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read template {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("template {path} is not valid YAML: {source}")]
    Yaml {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("template property {at}: {message}")]
    Invalid { at: String, message: String },
}

fn invalid(at: impl Into<String>, message: impl Into<String>) -> TemplateError {
    TemplateError::Invalid {
        at: at.into(),
        message: message.into(),
    }
}

/// A CloudFormation value that may be an intrinsic function, kept unresolved until the physical
/// resources are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// A plain scalar (strings, and numbers or booleans in their YAML spelling).
    Literal(String),
    /// `!Ref Name`: a parameter, a pseudo parameter (`AWS::Region`) or a resource.
    Ref(String),
    /// `!GetAtt Resource.Attribute`.
    GetAtt { resource: String, attribute: String },
    /// `!Sub "text ${Name} ${Resource.Attr}"` with optional local variables.
    Sub {
        template: String,
        variables: BTreeMap<String, Expr>,
    },
    /// `!Join [delimiter, [parts]]`.
    Join { delimiter: String, parts: Vec<Expr> },
    /// An intrinsic the local stack does not evaluate (`Fn::If`, `Fn::Select`…); resolving it
    /// fails with its name.
    Unsupported { function: String },
}

impl Expr {
    /// Parses a YAML value in short or long intrinsic form. Fails on sequences and mappings that
    /// are not intrinsics.
    pub fn parse(value: &Value, at: &str) -> Result<Expr, TemplateError> {
        match value {
            Value::String(s) => Ok(Expr::Literal(s.clone())),
            Value::Number(n) => Ok(Expr::Literal(n.to_string())),
            Value::Bool(b) => Ok(Expr::Literal(b.to_string())),
            Value::Tagged(tagged) => {
                let name = tagged.tag.to_string();
                let name = name.trim_start_matches('!');
                let long = if name == "Ref" {
                    "Ref".to_owned()
                } else {
                    format!("Fn::{name}")
                };
                Self::intrinsic(&long, &tagged.value, at)
            }
            Value::Mapping(map) if map.len() == 1 => {
                let (key, arg) = map.iter().next().ok_or_else(|| invalid(at, "empty mapping"))?;
                match key.as_str() {
                    Some(k) if k == "Ref" || k.starts_with("Fn::") => Self::intrinsic(k, arg, at),
                    _ => Err(invalid(
                        at,
                        "expected a scalar or an intrinsic function, found a mapping",
                    )),
                }
            }
            Value::Null => Err(invalid(at, "expected a value, found null")),
            _ => Err(invalid(at, "expected a scalar or an intrinsic function")),
        }
    }

    fn intrinsic(function: &str, arg: &Value, at: &str) -> Result<Expr, TemplateError> {
        match function {
            "Ref" => arg
                .as_str()
                .map(|name| Expr::Ref(name.to_owned()))
                .ok_or_else(|| invalid(at, "Ref takes a logical id")),
            "Fn::GetAtt" => {
                let (resource, attribute) = match arg {
                    Value::String(s) => s
                        .split_once('.')
                        .map(|(r, a)| (r.to_owned(), a.to_owned()))
                        .ok_or_else(|| invalid(at, format!("GetAtt `{s}` must be `Resource.Attribute`")))?,
                    Value::Sequence(seq) if seq.len() == 2 => match (seq[0].as_str(), seq[1].as_str()) {
                        (Some(r), Some(a)) => (r.to_owned(), a.to_owned()),
                        _ => return Err(invalid(at, "GetAtt takes [Resource, Attribute] strings")),
                    },
                    _ => {
                        return Err(invalid(
                            at,
                            "GetAtt takes `Resource.Attribute` or [Resource, Attribute]",
                        ));
                    }
                };
                Ok(Expr::GetAtt { resource, attribute })
            }
            "Fn::Sub" => match arg {
                Value::String(s) => Ok(Expr::Sub {
                    template: s.clone(),
                    variables: BTreeMap::new(),
                }),
                Value::Sequence(seq) if seq.len() == 2 => {
                    let template = seq[0]
                        .as_str()
                        .ok_or_else(|| invalid(at, "Sub's first element must be a string"))?
                        .to_owned();
                    let vars = seq[1]
                        .as_mapping()
                        .ok_or_else(|| invalid(at, "Sub's second element must be a mapping"))?;
                    let mut variables = BTreeMap::new();
                    for (k, v) in vars {
                        let k = k
                            .as_str()
                            .ok_or_else(|| invalid(at, "Sub variable names must be strings"))?;
                        variables.insert(k.to_owned(), Expr::parse(v, &format!("{at}.{k}"))?);
                    }
                    Ok(Expr::Sub { template, variables })
                }
                _ => Err(invalid(at, "Sub takes a string or [string, {variables}]")),
            },
            "Fn::Join" => {
                let seq = arg
                    .as_sequence()
                    .filter(|s| s.len() == 2)
                    .ok_or_else(|| invalid(at, "Join takes [delimiter, [parts]]"))?;
                let delimiter = seq[0]
                    .as_str()
                    .ok_or_else(|| invalid(at, "Join's delimiter must be a string"))?
                    .to_owned();
                let parts = seq[1]
                    .as_sequence()
                    .ok_or_else(|| invalid(at, "Join's parts must be a list"))?
                    .iter()
                    .map(|p| Expr::parse(p, at))
                    .collect::<Result<_, _>>()?;
                Ok(Expr::Join { delimiter, parts })
            }
            other => Ok(Expr::Unsupported {
                function: other.to_owned(),
            }),
        }
    }
}

impl std::fmt::Display for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expr::Literal(s) => write!(f, "{s:?}"),
            Expr::Ref(name) => write!(f, "!Ref {name}"),
            Expr::GetAtt { resource, attribute } => write!(f, "!GetAtt {resource}.{attribute}"),
            Expr::Sub { template, .. } => write!(f, "!Sub {template:?}"),
            Expr::Join { delimiter, parts } => write!(f, "!Join [{delimiter:?}, {} parts]", parts.len()),
            Expr::Unsupported { function } => write!(f, "{function}"),
        }
    }
}

/// A template parameter and its default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameter {
    pub name: String,
    /// `String`, `Number`, …
    pub kind: String,
    /// The default as CloudFormation passes it to `!Ref`: always a string.
    pub default: Option<String>,
    pub allowed_values: Vec<String>,
}

/// `AttributeDefinitions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttributeDefinition {
    pub attribute_name: String,
    /// `S`, `N` or `B`.
    pub attribute_type: String,
}

/// A key: partition key and optional sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySchema {
    pub hash: String,
    pub range: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawKeyElement {
    attribute_name: String,
    key_type: String,
}

impl KeySchema {
    fn from_raw(raw: &[RawKeyElement], at: &str) -> Result<KeySchema, TemplateError> {
        let find = |kind: &str| {
            raw.iter()
                .find(|k| k.key_type == kind)
                .map(|k| k.attribute_name.clone())
        };
        if let Some(bad) = raw.iter().find(|k| k.key_type != "HASH" && k.key_type != "RANGE") {
            return Err(invalid(at, format!("KeyType `{}` must be HASH or RANGE", bad.key_type)));
        }
        let hash = find("HASH").ok_or_else(|| invalid(at, "a key schema needs one HASH element"))?;
        Ok(KeySchema {
            hash,
            range: find("RANGE"),
        })
    }
}

/// `Projection` of a secondary index.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Projection {
    /// `ALL`, `KEYS_ONLY` or `INCLUDE`.
    pub projection_type: String,
    #[serde(default)]
    pub non_key_attributes: Vec<String>,
}

/// A global secondary index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalSecondaryIndex {
    pub name: String,
    pub key_schema: KeySchema,
    pub projection: Projection,
}

/// `TimeToLiveSpecification`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TimeToLive {
    pub attribute_name: String,
    pub enabled: bool,
}

/// An `AWS::DynamoDB::Table`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub logical_id: String,
    pub attribute_definitions: Vec<AttributeDefinition>,
    pub key_schema: KeySchema,
    pub global_secondary_indexes: Vec<GlobalSecondaryIndex>,
    /// `PAY_PER_REQUEST` or `PROVISIONED`.
    pub billing_mode: String,
    pub time_to_live: Option<TimeToLive>,
    pub point_in_time_recovery: bool,
    pub sse_enabled: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawTable {
    attribute_definitions: Vec<AttributeDefinition>,
    key_schema: Vec<RawKeyElement>,
    #[serde(default)]
    global_secondary_indexes: Vec<RawGsi>,
    billing_mode: Option<String>,
    time_to_live_specification: Option<TimeToLive>,
    point_in_time_recovery_specification: Option<RawPitr>,
    #[serde(rename = "SSESpecification")]
    sse_specification: Option<RawSse>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawGsi {
    index_name: String,
    key_schema: Vec<RawKeyElement>,
    projection: Projection,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawPitr {
    point_in_time_recovery_enabled: bool,
}

#[derive(Debug, Deserialize)]
struct RawSse {
    #[serde(rename = "SSEEnabled")]
    sse_enabled: bool,
}

/// An `AWS::SQS::Queue`'s redrive policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redrive {
    /// Logical id of the dead-letter queue (from `deadLetterTargetArn: !GetAtt Dlq.Arn`).
    pub dead_letter_queue: String,
    pub max_receive_count: u32,
}

/// An `AWS::SQS::Queue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    pub logical_id: String,
    pub fifo: bool,
    pub visibility_timeout_secs: u32,
    pub message_retention_secs: u32,
    pub delay_secs: Option<u32>,
    pub receive_wait_secs: Option<u32>,
    pub redrive: Option<Redrive>,
    pub sqs_managed_sse: bool,
}

/// An `AWS::S3::Bucket`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketSpec {
    pub logical_id: String,
    pub versioning: bool,
    /// `AES256` or `aws:kms` when default encryption is configured.
    pub encryption: Option<String>,
    pub block_public_access: bool,
    /// `NotificationConfiguration.QueueConfigurations`: object events sent to queues.
    pub queue_notifications: Vec<QueueNotification>,
    /// `LifecycleConfiguration.Rules` that are enabled.
    pub lifecycle: Vec<LifecycleRule>,
}

/// One enabled rule of a bucket's `LifecycleConfiguration` (days from parameters resolved to
/// their defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleRule {
    pub id: String,
    /// Objects under this key prefix only (every object when `None`).
    pub prefix: Option<String>,
    /// `ExpirationInDays`: current versions expire this long after creation.
    pub expiration_days: Option<u32>,
    /// `NoncurrentVersionExpiration.NoncurrentDays`.
    pub noncurrent_days: Option<u32>,
    /// `AbortIncompleteMultipartUpload.DaysAfterInitiation`.
    pub abort_multipart_days: Option<u32>,
}

/// One `QueueConfigurations` entry of a bucket's `NotificationConfiguration`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueNotification {
    /// Logical id of the queue (from `Queue: !GetAtt Q.Arn`).
    pub queue: String,
    /// Event types, e.g. `s3:ObjectCreated:*`.
    pub events: Vec<String>,
    pub prefix: Option<String>,
    pub suffix: Option<String>,
}

/// When a `Schedule` event fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleExpression {
    /// `rate(5 minutes)`.
    Rate(Duration),
    /// `cron(…)`, kept verbatim (the local runner fires these only on demand).
    Cron(String),
}

impl FromStr for ScheduleExpression {
    type Err = String;

    /// Parses EventBridge `rate(value unit)` and `cron(…)` expressions.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(inner) = s.strip_prefix("rate(").and_then(|r| r.strip_suffix(')')) {
            let (value, unit) = inner
                .trim()
                .split_once(char::is_whitespace)
                .ok_or_else(|| format!("`{s}`: a rate needs a value and a unit, e.g. rate(1 hour)"))?;
            let value: u64 = value
                .parse()
                .map_err(|_| format!("`{s}`: rate value `{value}` is not a positive whole number"))?;
            let unit_secs = match unit.trim() {
                "minute" | "minutes" => 60,
                "hour" | "hours" => 3600,
                "day" | "days" => 86_400,
                other => {
                    return Err(format!(
                        "`{s}`: rate unit `{other}` must be minute(s), hour(s) or day(s)"
                    ));
                }
            };
            if value == 0 {
                return Err(format!("`{s}`: a rate must be at least 1"));
            }
            Ok(ScheduleExpression::Rate(Duration::from_secs(value * unit_secs)))
        } else if s.starts_with("cron(") && s.ends_with(')') {
            Ok(ScheduleExpression::Cron(s.to_owned()))
        } else {
            Err(format!("`{s}` is not a schedule expression: use rate(…) or cron(…)"))
        }
    }
}

/// What triggers a function.
#[derive(Debug, Clone, PartialEq)]
pub enum EventSpec {
    /// `Type: Schedule` (or `ScheduleV2`): EventBridge invokes the function asynchronously with a
    /// constant input.
    Schedule {
        schedule: ScheduleExpression,
        /// The constant `Input`, as the JSON the function receives (`{}`-less schedules get the
        /// EventBridge event; locally they get `null`).
        input: Option<serde_json::Value>,
        enabled: bool,
    },
    /// `Type: SQS`: an event-source mapping polling a queue of this template.
    Sqs {
        /// Logical id of the queue.
        queue: String,
        batch_size: u32,
        maximum_batching_window_secs: Option<u32>,
        report_batch_item_failures: bool,
        maximum_concurrency: Option<u32>,
        enabled: bool,
    },
    /// Any other event type, kept by name so the local runner can say it does not emulate it.
    Other { kind: String },
}

/// An `AWS::Serverless::Function`, with Globals applied.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionSpec {
    pub logical_id: String,
    pub code_uri: Option<String>,
    /// `Metadata.BuildProperties.Binary` (the cargo-lambda binary name).
    pub binary: Option<String>,
    pub timeout_secs: u32,
    pub memory_mb: u32,
    /// Environment variables as the template writes them: Globals merged with the function's own
    /// (the function wins on a name clash, as SAM merges them).
    pub environment: BTreeMap<String, Expr>,
    /// Events by their name in the template.
    pub events: BTreeMap<String, EventSpec>,
}

impl FunctionSpec {
    /// The invocation timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.timeout_secs))
    }

    /// `(event name, queue logical id, …)` for each SQS mapping.
    pub fn sqs_events(&self) -> impl Iterator<Item = (&str, &EventSpec)> {
        self.events
            .iter()
            .filter(|(_, e)| matches!(e, EventSpec::Sqs { .. }))
            .map(|(n, e)| (n.as_str(), e))
    }
}

/// The template, reduced to what the local stack provisions and runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub parameters: BTreeMap<String, Parameter>,
    pub tables: BTreeMap<String, TableSpec>,
    pub queues: BTreeMap<String, QueueSpec>,
    pub buckets: BTreeMap<String, BucketSpec>,
    pub functions: BTreeMap<String, FunctionSpec>,
    /// Every resource's logical id and type, including those not modelled above.
    pub resource_types: BTreeMap<String, String>,
}

impl Template {
    /// Reads and models a template file.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Template, TemplateError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| TemplateError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml_str(&text).map_err(|e| match e {
            TemplateError::Yaml { source, .. } => TemplateError::Yaml {
                path: path.to_owned(),
                source,
            },
            other => other,
        })
    }

    /// Models a template given as YAML text, as deployed with every parameter at its default.
    pub fn from_yaml_str(text: &str) -> Result<Template, TemplateError> {
        Self::from_yaml_str_with(text, &BTreeMap::new())
    }

    /// Models a template given as YAML text, as deployed with `values` for the parameters they
    /// name and the defaults for the others: conditions are evaluated and `Fn::If` resolved with
    /// them, and `!Ref Parameter` yields them.
    pub fn from_yaml_str_with(text: &str, values: &BTreeMap<String, String>) -> Result<Template, TemplateError> {
        let doc: Value = serde_yaml::from_str(text).map_err(|source| TemplateError::Yaml {
            path: PathBuf::from("<string>"),
            source,
        })?;
        Parser::parse(&doc, values)
    }

    /// The template text as deployed with `values` (see [`Self::from_yaml_str_with`]): every
    /// condition applied, for checks of what the model leaves out (encryption, IAM).
    pub fn deployed_yaml(text: &str, values: &BTreeMap<String, String>) -> Result<Value, TemplateError> {
        let doc: Value = serde_yaml::from_str(text).map_err(|source| TemplateError::Yaml {
            path: PathBuf::from("<string>"),
            source,
        })?;
        let params = Parser::parameters(&doc, values)?;
        conditions::resolve(&doc, &parameter_values(&params))
    }

    /// The function with this logical id.
    pub fn function(&self, logical_id: &str) -> Option<&FunctionSpec> {
        self.functions.get(logical_id)
    }

    /// Parameter defaults, as `!Ref` would yield them.
    pub fn parameter_defaults(&self) -> BTreeMap<String, String> {
        parameter_values(&self.parameters)
    }

    /// Queues in an order where every dead-letter queue comes before the queues that redrive to
    /// it. Fails on a redrive cycle or a redrive to an unknown queue.
    pub fn queues_in_creation_order(&self) -> Result<Vec<&QueueSpec>, TemplateError> {
        let mut ordered: Vec<&QueueSpec> = Vec::with_capacity(self.queues.len());
        let mut placed = std::collections::BTreeSet::new();
        while ordered.len() < self.queues.len() {
            let before = ordered.len();
            for queue in self.queues.values() {
                if placed.contains(queue.logical_id.as_str()) {
                    continue;
                }
                let ready = match &queue.redrive {
                    None => true,
                    Some(r) => {
                        if !self.queues.contains_key(&r.dead_letter_queue) {
                            return Err(invalid(
                                format!("Resources.{}.Properties.RedrivePolicy", queue.logical_id),
                                format!(
                                    "dead-letter queue `{}` is not a queue of this template",
                                    r.dead_letter_queue
                                ),
                            ));
                        }
                        placed.contains(r.dead_letter_queue.as_str())
                    }
                };
                if ready {
                    placed.insert(queue.logical_id.as_str());
                    ordered.push(queue);
                }
            }
            if ordered.len() == before {
                return Err(invalid("Resources", "queues redrive to each other in a cycle"));
            }
        }
        Ok(ordered)
    }
}

struct Parser<'a> {
    params: BTreeMap<String, Parameter>,
    doc: &'a Value,
}

/// Each parameter's value as `!Ref` yields it (its default, or the value given).
fn parameter_values(params: &BTreeMap<String, Parameter>) -> BTreeMap<String, String> {
    params
        .values()
        .filter_map(|p| p.default.clone().map(|d| (p.name.clone(), d)))
        .collect()
}

impl<'a> Parser<'a> {
    fn parse(doc: &Value, values: &BTreeMap<String, String>) -> Result<Template, TemplateError> {
        let params = Parser::parameters(doc, values)?;
        let resolved = conditions::resolve(doc, &parameter_values(&params))?;
        Parser { params, doc: &resolved }.model()
    }

    fn model(self) -> Result<Template, TemplateError> {
        let parser = &self;
        let doc = self.doc;
        let resources = doc
            .get("Resources")
            .and_then(Value::as_mapping)
            .ok_or_else(|| invalid("Resources", "the template has no Resources mapping"))?;

        let mut template = Template {
            parameters: BTreeMap::new(),
            tables: BTreeMap::new(),
            queues: BTreeMap::new(),
            buckets: BTreeMap::new(),
            functions: BTreeMap::new(),
            resource_types: BTreeMap::new(),
        };
        for (id, resource) in resources {
            let id = id
                .as_str()
                .ok_or_else(|| invalid("Resources", "logical ids must be strings"))?
                .to_owned();
            let at = format!("Resources.{id}");
            let kind = resource
                .get("Type")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(&at, "the resource has no Type"))?;
            template.resource_types.insert(id.clone(), kind.to_owned());
            let empty = Value::Mapping(serde_yaml::Mapping::new());
            let props = resource.get("Properties").unwrap_or(&empty);
            let at = format!("{at}.Properties");
            match kind {
                DYNAMODB_TABLE => {
                    template.tables.insert(id.clone(), parser.table(&id, props, &at)?);
                }
                SQS_QUEUE => {
                    template.queues.insert(id.clone(), parser.queue(&id, props, &at)?);
                }
                S3_BUCKET => {
                    template.buckets.insert(id.clone(), parser.bucket(&id, props, &at)?);
                }
                SERVERLESS_FUNCTION => {
                    let function = parser.function(&id, resource, props, &at)?;
                    template.functions.insert(id.clone(), function);
                }
                _ => {}
            }
        }
        template.parameters = self.params;
        Ok(template)
    }

    /// The template's parameters, with `values` replacing the defaults of those they name.
    fn parameters(
        doc: &Value,
        values: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, Parameter>, TemplateError> {
        let mut out = BTreeMap::new();
        if let Some(params) = doc.get("Parameters").and_then(Value::as_mapping) {
            Self::parse_parameters(params, &mut out)?;
        }
        for (name, value) in values {
            let param = out
                .get_mut(name)
                .ok_or_else(|| invalid(format!("Parameters.{name}"), "no such parameter in the template"))?;
            if !param.allowed_values.is_empty() && !param.allowed_values.contains(value) {
                return Err(invalid(
                    format!("Parameters.{name}"),
                    format!("`{value}` is not one of {}", param.allowed_values.join(", ")),
                ));
            }
            param.default = Some(value.clone());
        }
        Ok(out)
    }

    fn parse_parameters(
        params: &serde_yaml::Mapping,
        out: &mut BTreeMap<String, Parameter>,
    ) -> Result<(), TemplateError> {
        for (name, spec) in params {
            let name = name
                .as_str()
                .ok_or_else(|| invalid("Parameters", "parameter names must be strings"))?
                .to_owned();
            let at = format!("Parameters.{name}");
            let kind = spec.get("Type").and_then(Value::as_str).unwrap_or("String").to_owned();
            let default = spec.get("Default").map(|d| scalar_string(d, &at)).transpose()?;
            let allowed_values = spec
                .get("AllowedValues")
                .and_then(Value::as_sequence)
                .map(|vs| vs.iter().map(|v| scalar_string(v, &at)).collect::<Result<Vec<_>, _>>())
                .transpose()?
                .unwrap_or_default();
            out.insert(
                name.clone(),
                Parameter {
                    name,
                    kind,
                    default,
                    allowed_values,
                },
            );
        }
        Ok(())
    }

    /// A scalar property, where `!Ref Parameter` is replaced by the parameter's default.
    fn scalar(&self, value: &Value, at: &str) -> Result<String, TemplateError> {
        match Expr::parse(value, at)? {
            Expr::Literal(s) => Ok(s),
            Expr::Ref(name) => self.params.get(&name).and_then(|p| p.default.clone()).ok_or_else(|| {
                invalid(
                    at,
                    format!("`!Ref {name}` must name a parameter with a Default to be evaluated locally"),
                )
            }),
            other => Err(invalid(
                at,
                format!("`{other}` cannot be evaluated here; use a literal or a parameter"),
            )),
        }
    }

    fn opt_u32(&self, props: &Value, key: &str, at: &str) -> Result<Option<u32>, TemplateError> {
        let Some(value) = props.get(key) else {
            return Ok(None);
        };
        let at = format!("{at}.{key}");
        let s = self.scalar(value, &at)?;
        s.parse::<u32>()
            .map(Some)
            .map_err(|_| invalid(&at, format!("`{s}` is not a whole number")))
    }

    fn opt_bool(&self, props: &Value, key: &str, at: &str) -> Result<Option<bool>, TemplateError> {
        let Some(value) = props.get(key) else {
            return Ok(None);
        };
        let at = format!("{at}.{key}");
        let s = self.scalar(value, &at)?;
        match s.to_ascii_lowercase().as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            _ => Err(invalid(&at, format!("`{s}` is not true or false"))),
        }
    }

    fn table(&self, id: &str, props: &Value, at: &str) -> Result<TableSpec, TemplateError> {
        let raw: RawTable = serde_yaml::from_value(props.clone()).map_err(|e| {
            invalid(
                at,
                format!("{e} (table properties must be literals to be provisioned locally)"),
            )
        })?;
        let key_schema = KeySchema::from_raw(&raw.key_schema, &format!("{at}.KeySchema"))?;
        let global_secondary_indexes = raw
            .global_secondary_indexes
            .iter()
            .map(|g| {
                Ok(GlobalSecondaryIndex {
                    name: g.index_name.clone(),
                    key_schema: KeySchema::from_raw(
                        &g.key_schema,
                        &format!("{at}.GlobalSecondaryIndexes.{}.KeySchema", g.index_name),
                    )?,
                    projection: g.projection.clone(),
                })
            })
            .collect::<Result<Vec<_>, TemplateError>>()?;
        let defined = |name: &str| raw.attribute_definitions.iter().any(|a| a.attribute_name == name);
        let keys = std::iter::once(&key_schema).chain(global_secondary_indexes.iter().map(|g| &g.key_schema));
        for key in keys {
            for attr in std::iter::once(&key.hash).chain(key.range.iter()) {
                if !defined(attr) {
                    return Err(invalid(
                        format!("{at}.AttributeDefinitions"),
                        format!("key attribute `{attr}` has no AttributeDefinitions entry"),
                    ));
                }
            }
        }
        Ok(TableSpec {
            logical_id: id.to_owned(),
            attribute_definitions: raw.attribute_definitions,
            key_schema,
            global_secondary_indexes,
            billing_mode: raw.billing_mode.unwrap_or_else(|| "PROVISIONED".to_owned()),
            time_to_live: raw.time_to_live_specification,
            point_in_time_recovery: raw
                .point_in_time_recovery_specification
                .is_some_and(|p| p.point_in_time_recovery_enabled),
            sse_enabled: raw.sse_specification.is_some_and(|s| s.sse_enabled),
        })
    }

    fn queue(&self, id: &str, props: &Value, at: &str) -> Result<QueueSpec, TemplateError> {
        let redrive = match props.get("RedrivePolicy") {
            None => None,
            Some(policy) => {
                let at = format!("{at}.RedrivePolicy");
                let target = policy
                    .get("deadLetterTargetArn")
                    .ok_or_else(|| invalid(&at, "deadLetterTargetArn is missing"))?;
                let dead_letter_queue = match Expr::parse(target, &at)? {
                    Expr::GetAtt { resource, attribute } if attribute == "Arn" => resource,
                    other => {
                        return Err(invalid(
                            &at,
                            format!(
                                "deadLetterTargetArn `{other}` must be `!GetAtt <queue>.Arn` of a queue in this template"
                            ),
                        ));
                    }
                };
                let max_receive_count = self
                    .opt_u32(policy, "maxReceiveCount", &at)?
                    .ok_or_else(|| invalid(&at, "maxReceiveCount is missing"))?;
                Some(Redrive {
                    dead_letter_queue,
                    max_receive_count,
                })
            }
        };
        Ok(QueueSpec {
            logical_id: id.to_owned(),
            fifo: self.opt_bool(props, "FifoQueue", at)?.unwrap_or(false),
            visibility_timeout_secs: self
                .opt_u32(props, "VisibilityTimeout", at)?
                .unwrap_or(DEFAULT_QUEUE_VISIBILITY_TIMEOUT_SECS),
            message_retention_secs: self
                .opt_u32(props, "MessageRetentionPeriod", at)?
                .unwrap_or(DEFAULT_QUEUE_RETENTION_SECS),
            delay_secs: self.opt_u32(props, "DelaySeconds", at)?,
            receive_wait_secs: self.opt_u32(props, "ReceiveMessageWaitTimeSeconds", at)?,
            redrive,
            sqs_managed_sse: self.opt_bool(props, "SqsManagedSseEnabled", at)?.unwrap_or(false),
        })
    }

    fn queue_notifications(&self, props: &Value, at: &str) -> Result<Vec<QueueNotification>, TemplateError> {
        let Some(configs) = props
            .get("NotificationConfiguration")
            .and_then(|n| n.get("QueueConfigurations"))
        else {
            return Ok(Vec::new());
        };
        let at = format!("{at}.NotificationConfiguration.QueueConfigurations");
        let configs = configs.as_sequence().ok_or_else(|| invalid(&at, "must be a list"))?;
        configs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let at = format!("{at}[{i}]");
                let queue_expr = c.get("Queue").ok_or_else(|| invalid(&at, "has no Queue"))?;
                let queue = match Expr::parse(queue_expr, &format!("{at}.Queue"))? {
                    Expr::GetAtt { resource, attribute } if attribute == "Arn" => resource,
                    other => {
                        return Err(invalid(
                            format!("{at}.Queue"),
                            format!("must be !GetAtt <Queue>.Arn of a queue in this template, not {other}"),
                        ));
                    }
                };
                let events = match c.get("Event") {
                    Some(e) => vec![self.scalar(e, &format!("{at}.Event"))?],
                    None => return Err(invalid(&at, "has no Event")),
                };
                let mut prefix = None;
                let mut suffix = None;
                if let Some(rules) = c
                    .get("Filter")
                    .and_then(|f| f.get("S3Key"))
                    .and_then(|k| k.get("Rules"))
                    .and_then(Value::as_sequence)
                {
                    for rule in rules {
                        let name = rule.get("Name").and_then(Value::as_str).unwrap_or_default();
                        let value = rule.get("Value").map(|v| self.scalar(v, &at)).transpose()?;
                        match name.to_ascii_lowercase().as_str() {
                            "prefix" => prefix = value,
                            "suffix" => suffix = value,
                            other => return Err(invalid(&at, format!("unknown filter rule name `{other}`"))),
                        }
                    }
                }
                Ok(QueueNotification {
                    queue,
                    events,
                    prefix,
                    suffix,
                })
            })
            .collect()
    }

    fn bucket(&self, id: &str, props: &Value, at: &str) -> Result<BucketSpec, TemplateError> {
        let versioning = props
            .get("VersioningConfiguration")
            .and_then(|v| v.get("Status"))
            .and_then(Value::as_str)
            == Some("Enabled");
        let encryption = props
            .get("BucketEncryption")
            .and_then(|e| e.get("ServerSideEncryptionConfiguration"))
            .and_then(Value::as_sequence)
            .and_then(|rules| rules.first())
            .and_then(|r| r.get("ServerSideEncryptionByDefault"))
            .and_then(|d| d.get("SSEAlgorithm"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let block_public_access = props.get("PublicAccessBlockConfiguration").is_some_and(|c| {
            [
                "BlockPublicAcls",
                "BlockPublicPolicy",
                "IgnorePublicAcls",
                "RestrictPublicBuckets",
            ]
            .iter()
            .all(|k| c.get(*k).and_then(Value::as_bool) == Some(true))
        });
        Ok(BucketSpec {
            logical_id: id.to_owned(),
            versioning,
            encryption,
            block_public_access,
            queue_notifications: self.queue_notifications(props, at)?,
            lifecycle: self.lifecycle(props, at)?,
        })
    }

    fn lifecycle(&self, props: &Value, at: &str) -> Result<Vec<LifecycleRule>, TemplateError> {
        let Some(rules) = props
            .get("LifecycleConfiguration")
            .and_then(|c| c.get("Rules"))
            .and_then(Value::as_sequence)
        else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let at = format!("{at}.LifecycleConfiguration.Rules[{i}]");
            if rule.get("Status").and_then(Value::as_str) != Some("Enabled") {
                continue;
            }
            let id = rule
                .get("Id")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(&at, "a lifecycle rule needs an `Id`"))?;
            let sub = |key: &str| rule.get(key).cloned().unwrap_or(Value::Null);
            out.push(LifecycleRule {
                id: id.to_owned(),
                prefix: rule
                    .get("Prefix")
                    .map(|p| self.scalar(p, &format!("{at}.Prefix")))
                    .transpose()?,
                expiration_days: self.opt_u32(rule, "ExpirationInDays", &at)?,
                noncurrent_days: self.opt_u32(&sub("NoncurrentVersionExpiration"), "NoncurrentDays", &at)?,
                abort_multipart_days: self.opt_u32(
                    &sub("AbortIncompleteMultipartUpload"),
                    "DaysAfterInitiation",
                    &at,
                )?,
            });
        }
        Ok(out)
    }

    fn globals(&self) -> Option<&Value> {
        self.doc.get("Globals").and_then(|g| g.get("Function"))
    }

    fn environment(&self, props: Option<&Value>, at: &str) -> Result<BTreeMap<String, Expr>, TemplateError> {
        let mut env = BTreeMap::new();
        let Some(vars) = props
            .and_then(|p| p.get("Environment"))
            .and_then(|e| e.get("Variables"))
            .and_then(Value::as_mapping)
        else {
            return Ok(env);
        };
        for (name, value) in vars {
            let name = name
                .as_str()
                .ok_or_else(|| invalid(at, "environment variable names must be strings"))?;
            env.insert(
                name.to_owned(),
                Expr::parse(value, &format!("{at}.Environment.Variables.{name}"))?,
            );
        }
        Ok(env)
    }

    fn function(&self, id: &str, resource: &Value, props: &Value, at: &str) -> Result<FunctionSpec, TemplateError> {
        let globals = self.globals();
        let num = |key: &str| -> Result<Option<u32>, TemplateError> {
            match self.opt_u32(props, key, at)? {
                Some(v) => Ok(Some(v)),
                None => match globals {
                    Some(g) => self.opt_u32(g, key, "Globals.Function"),
                    None => Ok(None),
                },
            }
        };
        let timeout_secs = num("Timeout")?.unwrap_or(DEFAULT_FUNCTION_TIMEOUT_SECS);
        let memory_mb = num("MemorySize")?.unwrap_or(DEFAULT_FUNCTION_MEMORY_MB);

        let mut environment = self.environment(globals, "Globals.Function")?;
        environment.extend(self.environment(Some(props), at)?);

        let code_uri = props
            .get("CodeUri")
            .or_else(|| globals.and_then(|g| g.get("CodeUri")))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let binary = resource
            .get("Metadata")
            .and_then(|m| m.get("BuildProperties"))
            .and_then(|b| b.get("Binary"))
            .and_then(Value::as_str)
            .map(str::to_owned);

        let mut events = BTreeMap::new();
        if let Some(evs) = props.get("Events").and_then(Value::as_mapping) {
            for (name, event) in evs {
                let name = name
                    .as_str()
                    .ok_or_else(|| invalid(at, "event names must be strings"))?
                    .to_owned();
                let at = format!("{at}.Events.{name}");
                events.insert(name, self.event(event, &at)?);
            }
        }
        Ok(FunctionSpec {
            logical_id: id.to_owned(),
            code_uri,
            binary,
            timeout_secs,
            memory_mb,
            environment,
            events,
        })
    }

    fn event(&self, event: &Value, at: &str) -> Result<EventSpec, TemplateError> {
        let kind = event
            .get("Type")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(at, "the event has no Type"))?;
        let empty = Value::Mapping(serde_yaml::Mapping::new());
        let props = event.get("Properties").unwrap_or(&empty);
        let at = format!("{at}.Properties");
        match kind {
            "Schedule" | "ScheduleV2" => {
                let key = if kind == "Schedule" {
                    "Schedule"
                } else {
                    "ScheduleExpression"
                };
                let expr = props
                    .get(key)
                    .ok_or_else(|| invalid(&at, format!("{key} is missing")))?;
                let expr = self.scalar(expr, &format!("{at}.{key}"))?;
                let schedule = expr.parse().map_err(|e: String| invalid(format!("{at}.{key}"), e))?;
                let input = props
                    .get("Input")
                    .map(|i| {
                        let text = self.scalar(i, &format!("{at}.Input"))?;
                        serde_json::from_str(&text)
                            .map_err(|e| invalid(format!("{at}.Input"), format!("Input is not JSON ({e}): {text}")))
                    })
                    .transpose()?;
                let enabled = match (
                    self.opt_bool(props, "Enabled", &at)?,
                    props.get("State").and_then(Value::as_str),
                ) {
                    (Some(e), _) => e,
                    (None, Some(state)) => state == "ENABLED",
                    (None, None) => true,
                };
                Ok(EventSpec::Schedule {
                    schedule,
                    input,
                    enabled,
                })
            }
            "SQS" => {
                let queue_value = props.get("Queue").ok_or_else(|| invalid(&at, "Queue is missing"))?;
                let queue = match Expr::parse(queue_value, &format!("{at}.Queue"))? {
                    Expr::GetAtt { resource, attribute } if attribute == "Arn" => resource,
                    other => {
                        return Err(invalid(
                            format!("{at}.Queue"),
                            format!("`{other}` must be `!GetAtt <queue>.Arn` of a queue in this template"),
                        ));
                    }
                };
                let batch_size = self.opt_u32(props, "BatchSize", &at)?.unwrap_or(DEFAULT_SQS_BATCH_SIZE);
                let maximum_batching_window_secs = self.opt_u32(props, "MaximumBatchingWindowInSeconds", &at)?;
                if batch_size == 0
                    || (batch_size > MAX_SQS_BATCH_SIZE_WITHOUT_WINDOW && maximum_batching_window_secs.is_none())
                {
                    return Err(invalid(
                        format!("{at}.BatchSize"),
                        format!(
                            "BatchSize {batch_size} must be 1..=10, or set MaximumBatchingWindowInSeconds for larger batches"
                        ),
                    ));
                }
                let report_batch_item_failures = props
                    .get("FunctionResponseTypes")
                    .and_then(Value::as_sequence)
                    .is_some_and(|types| types.iter().any(|t| t.as_str() == Some("ReportBatchItemFailures")));
                let maximum_concurrency = match props.get("ScalingConfig") {
                    Some(scaling) => self.opt_u32(scaling, "MaximumConcurrency", &format!("{at}.ScalingConfig"))?,
                    None => None,
                };
                Ok(EventSpec::Sqs {
                    queue,
                    batch_size,
                    maximum_batching_window_secs,
                    report_batch_item_failures,
                    maximum_concurrency,
                    enabled: self.opt_bool(props, "Enabled", &at)?.unwrap_or(true),
                })
            }
            other => Ok(EventSpec::Other { kind: other.to_owned() }),
        }
    }
}

fn scalar_string(value: &Value, at: &str) -> Result<String, TemplateError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(invalid(at, "expected a scalar")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project_template() -> Template {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml");
        match Template::from_path(path) {
            Ok(t) => t,
            Err(e) => panic!("template.yaml must parse: {e}"),
        }
    }

    const KEY: &str = "arn:aws:kms:eu-west-1:111122223333:key/0b7e1c9a-5d1f-4c43-9a57-3c1a2f0d9e11";

    fn deployed(values: &[(&str, &str)]) -> Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml");
        let text = std::fs::read_to_string(path).unwrap();
        let values = values.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Template::deployed_yaml(&text, &values).unwrap()
    }

    fn resources_of<'v>(doc: &'v Value, kind: &str) -> Vec<(&'v str, &'v Value)> {
        doc["Resources"]
            .as_mapping()
            .unwrap()
            .iter()
            .filter(|(_, r)| r["Type"].as_str() == Some(kind))
            .map(|(id, r)| (id.as_str().unwrap(), &r["Properties"]))
            .collect()
    }

    fn is_key_ref(value: &Value) -> bool {
        Expr::parse(value, "x").ok() == Some(Expr::Ref("KmsKeyArn".into()))
    }

    /// Every statement of a function's inline policies.
    fn statements(props: &Value) -> Vec<&Value> {
        props["Policies"]
            .as_sequence()
            .unwrap()
            .iter()
            .flat_map(|p| p["Statement"].as_sequence().unwrap().iter())
            .collect()
    }

    #[test]
    fn a_customer_key_encrypts_every_table_queue_bucket_and_topic_and_every_function_may_use_it() {
        let doc = deployed(&[("KmsKeyArn", KEY)]);
        for (id, props) in resources_of(&doc, "AWS::DynamoDB::Table") {
            let sse = &props["SSESpecification"];
            assert_eq!(sse["SSEType"].as_str(), Some("KMS"), "{id}");
            assert!(is_key_ref(&sse["KMSMasterKeyId"]), "{id}");
        }
        let queues = resources_of(&doc, "AWS::SQS::Queue");
        assert!(queues.len() >= 10);
        for (id, props) in queues {
            assert!(is_key_ref(&props["KmsMasterKeyId"]), "{id}");
            assert_eq!(
                props.get("SqsManagedSseEnabled"),
                None,
                "{id}: one encryption setting only"
            );
        }
        for (id, props) in resources_of(&doc, "AWS::S3::Bucket") {
            let rule = &props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0];
            assert_eq!(
                rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"].as_str(),
                Some("aws:kms"),
                "{id}"
            );
            assert!(
                is_key_ref(&rule["ServerSideEncryptionByDefault"]["KMSMasterKeyID"]),
                "{id}"
            );
        }
        for (id, props) in resources_of(&doc, "AWS::SNS::Topic") {
            assert!(is_key_ref(&props["KmsMasterKeyId"]), "{id}");
        }
        let functions = resources_of(&doc, "AWS::Serverless::Function");
        assert_eq!(functions.len(), 7);
        for (id, props) in functions {
            let key = statements(props)
                .into_iter()
                .find(|s| is_key_ref(&s["Resource"]))
                .unwrap_or_else(|| panic!("{id} cannot use the key"));
            let actions: Vec<&str> = key["Action"]
                .as_sequence()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(actions, ["kms:Decrypt", "kms:GenerateDataKey"], "{id}");
            assert!(
                key["Condition"]["StringEquals"]["kms:ViaService"].is_sequence(),
                "{id}: only through services"
            );
        }
        assert!(doc["Outputs"].get("CustomerKey").is_some());
    }

    #[test]
    fn without_a_customer_key_nothing_names_one_and_alarms_can_reach_their_topic() {
        let doc = deployed(&[]);
        let text = serde_yaml::to_string(&doc["Resources"]).unwrap();
        assert!(
            !text.contains("!Ref KmsKeyArn"),
            "no resource refers to the empty key parameter"
        );
        for (id, props) in resources_of(&doc, "AWS::SNS::Topic") {
            // CloudWatch cannot publish to a topic under the AWS-managed key alias/aws/sns.
            assert_eq!(props.get("KmsMasterKeyId"), None, "{id}");
        }
        for (id, props) in resources_of(&doc, "AWS::SQS::Queue") {
            assert_eq!(props["SqsManagedSseEnabled"], Value::Bool(true), "{id}");
        }
        let bucket = &resources_of(&doc, "AWS::S3::Bucket")[0].1["BucketEncryption"];
        assert_eq!(
            bucket["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"].as_str(),
            Some("AES256")
        );
        assert!(doc["Outputs"].get("CustomerKey").is_none());
    }

    #[test]
    fn functions_read_only_their_own_stack_s_secrets() {
        let doc = deployed(&[]);
        let scoped = Expr::Sub {
            template: "filetrail/${AWS::StackName}/".into(),
            variables: BTreeMap::new(),
        };
        for (id, props) in resources_of(&doc, "AWS::Serverless::Function") {
            let reads_secrets: Vec<&Value> = statements(props)
                .into_iter()
                .filter(|s| s["Action"].as_str() == Some("secretsmanager:GetSecretValue"))
                .collect();
            let env = &props["Environment"]["Variables"];
            match reads_secrets.as_slice() {
                [] => assert!(env.get("FILETRAIL_SECRET_PREFIX").is_none(), "{id}"),
                [statement] => {
                    let Ok(Expr::Sub { template, .. }) = Expr::parse(&statement["Resource"], "x") else {
                        panic!("{id}: the secret resource is a !Sub ARN");
                    };
                    assert!(
                        template.ends_with(":secret:filetrail/${AWS::StackName}/*"),
                        "{id} may read {template}"
                    );
                    assert_eq!(
                        Expr::parse(&env["FILETRAIL_SECRET_PREFIX"], "x").ok(),
                        Some(scoped.clone()),
                        "{id}"
                    );
                }
                more => panic!("{id} has {} secret statements", more.len()),
            }
            let policies = serde_yaml::to_string(&props["Policies"]).unwrap();
            assert!(
                !policies.contains("filetrail-write"),
                "{id} may read write-mode secrets"
            );
            assert!(
                !policies.contains("secret:*") && !policies.contains("secret:filetrail*"),
                "{id}: {policies}"
            );
        }
        // The CLI's write prefix (no function knows it) is the stack output's.
        let Ok(Expr::Sub { template, .. }) = Expr::parse(&doc["Outputs"]["WriteSecretPrefix"]["Value"], "x") else {
            panic!("the WriteSecretPrefix output is a !Sub");
        };
        assert_eq!(template, crate::config::write_secret_prefix("${AWS::StackName}"));
        assert!(
            !template.starts_with("filetrail/"),
            "outside the prefix functions may read"
        );
    }

    #[test]
    fn short_and_long_intrinsic_forms_parse_to_the_same_expr() {
        let short: Value = serde_yaml::from_str("!GetAtt Queue.Arn").unwrap_or(Value::Null);
        let long: Value = serde_yaml::from_str("{'Fn::GetAtt': [Queue, Arn]}").unwrap_or(Value::Null);
        let expected = Expr::GetAtt {
            resource: "Queue".into(),
            attribute: "Arn".into(),
        };
        assert_eq!(Expr::parse(&short, "x").ok(), Some(expected.clone()));
        assert_eq!(Expr::parse(&long, "x").ok(), Some(expected));
        let short_ref: Value = serde_yaml::from_str("!Ref Table").unwrap_or(Value::Null);
        let long_ref: Value = serde_yaml::from_str("{Ref: Table}").unwrap_or(Value::Null);
        assert_eq!(Expr::parse(&short_ref, "x").ok(), Expr::parse(&long_ref, "x").ok());
    }

    #[test]
    fn unknown_intrinsics_are_kept_by_name() {
        let v: Value = serde_yaml::from_str("!If [Cond, a, b]").unwrap_or(Value::Null);
        assert_eq!(
            Expr::parse(&v, "x").ok(),
            Some(Expr::Unsupported {
                function: "Fn::If".into()
            })
        );
    }

    #[test]
    fn rate_and_cron_schedules_parse_and_garbage_is_rejected() {
        assert_eq!(
            "rate(1 hour)".parse::<ScheduleExpression>(),
            Ok(ScheduleExpression::Rate(Duration::from_secs(3600)))
        );
        assert_eq!(
            "rate(5 minutes)".parse::<ScheduleExpression>(),
            Ok(ScheduleExpression::Rate(Duration::from_secs(300)))
        );
        assert!(matches!(
            "cron(0 12 * * ? *)".parse::<ScheduleExpression>(),
            Ok(ScheduleExpression::Cron(_))
        ));
        assert!("rate(0 hours)".parse::<ScheduleExpression>().is_err());
        assert!("every hour".parse::<ScheduleExpression>().is_err());
    }

    #[test]
    fn project_template_models_tables_queues_and_functions() {
        let t = project_template();
        let state = &t.tables["StateTable"];
        assert_eq!(state.key_schema.hash, "pk");
        assert_eq!(state.key_schema.range.as_deref(), Some("sk"));
        assert_eq!(state.global_secondary_indexes[0].name, "gsi1");
        assert_eq!(state.global_secondary_indexes[0].projection.projection_type, "INCLUDE");
        assert_eq!(state.billing_mode, "PAY_PER_REQUEST");

        let index_queue = &t.queues["IndexQueue"];
        assert_eq!(
            index_queue.redrive,
            Some(Redrive {
                dead_letter_queue: "IndexDeadLetterQueue".into(),
                max_receive_count: 5
            })
        );

        let discover = &t.functions["DiscoverFunction"];
        assert_eq!(discover.timeout_secs, 900);
        assert_eq!(discover.binary.as_deref(), Some("discover"));
        assert_eq!(
            discover.environment.get("RUST_LOG"),
            Some(&Expr::Ref("LogLevel".into()))
        );
        assert_eq!(
            discover.events.get("Schedule"),
            Some(&EventSpec::Schedule {
                schedule: ScheduleExpression::Rate(Duration::from_secs(3600)),
                input: Some(serde_json::json!({"type": "discover_all"})),
                enabled: true,
            })
        );
    }

    #[test]
    fn every_sqs_source_queue_visibility_is_at_least_six_function_timeouts() {
        let t = project_template();
        for f in t.functions.values() {
            for (_, event) in f.sqs_events() {
                if let EventSpec::Sqs {
                    queue,
                    maximum_batching_window_secs,
                    ..
                } = event
                {
                    let q = &t.queues[queue];
                    let needed = 6 * f.timeout_secs + maximum_batching_window_secs.unwrap_or(0);
                    assert!(
                        q.visibility_timeout_secs >= needed,
                        "{queue}: VisibilityTimeout {} < 6 x {} Timeout {}",
                        q.visibility_timeout_secs,
                        f.logical_id,
                        f.timeout_secs
                    );
                }
            }
        }
    }

    /// An audit blob that times out or panics fails its whole invocation (release builds abort
    /// on panic): ingest takes one blob per invocation, so it never takes healthy blobs with it.
    #[test]
    fn ingest_takes_one_blob_per_invocation() {
        let t = project_template();
        let sizes: Vec<u32> = t.functions["IngestActivityFunction"]
            .sqs_events()
            .filter_map(|(_, e)| match e {
                EventSpec::Sqs { batch_size, .. } => Some(*batch_size),
                _ => None,
            })
            .collect();
        assert_eq!(sizes, [1]);
    }

    /// Functions without reserved concurrency are bounded by their queues' event sources, as
    /// the template's checkov skips (CKV_AWS_115) say.
    #[test]
    fn every_sqs_event_source_bounds_its_function_s_concurrency() {
        let t = project_template();
        let mut sources = 0;
        for f in t.functions.values() {
            for (name, event) in f.sqs_events() {
                if let EventSpec::Sqs {
                    maximum_concurrency, ..
                } = event
                {
                    sources += 1;
                    assert!(
                        maximum_concurrency.is_some_and(|m| (2..=10).contains(&m)),
                        "{}.{name}: ScalingConfig.MaximumConcurrency {maximum_concurrency:?}",
                        f.logical_id
                    );
                }
            }
        }
        assert!(sources >= 5, "{sources} SQS event sources");
    }

    #[test]
    fn queue_creation_order_puts_dead_letter_queues_first() {
        let t = project_template();
        let order: Vec<&str> = t
            .queues_in_creation_order()
            .map(|qs| qs.iter().map(|q| q.logical_id.as_str()).collect())
            .unwrap_or_default();
        let pos = |id: &str| order.iter().position(|q| *q == id);
        assert!(pos("IndexDeadLetterQueue") < pos("IndexQueue"));
        assert!(pos("DiscoverDeadLetterQueue") < pos("DiscoverQueue"));
        assert_eq!(order.len(), t.queues.len());
    }

    #[test]
    fn a_redrive_to_an_unknown_queue_is_rejected_with_its_path() {
        let yaml = r"
Resources:
  Q:
    Type: AWS::SQS::Queue
    Properties:
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt Missing.Arn
        maxReceiveCount: 3
";
        let t = Template::from_yaml_str(yaml).ok();
        let err = t.map(|t| t.queues_in_creation_order().map(|_| ()));
        match err {
            Some(Err(e)) => assert!(e.to_string().contains("Missing"), "{e}"),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn sqs_batch_size_above_ten_without_window_is_rejected() {
        let yaml = r"
Resources:
  Q:
    Type: AWS::SQS::Queue
  F:
    Type: AWS::Serverless::Function
    Properties:
      Events:
        Queue:
          Type: SQS
          Properties:
            Queue: !GetAtt Q.Arn
            BatchSize: 20
";
        let err = Template::from_yaml_str(yaml)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("BatchSize 20"), "{err}");
    }
}
