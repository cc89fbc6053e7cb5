//! The crate's one error type, and how AWS SDK failures map to the ports' retry classes.
//!
//! Every variant names the AWS resource (table, queue URL, secret id) and, when a person must
//! act, what to do. Secret values never appear in an error. [`AwsError`] converts into
//! [`PortError`] so adapters behind a port can use `?`.

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use filetrail_core::{PortError, RetryClass};

/// A failure talking to AWS or reading what filetrail stored there.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AwsError {
    /// An AWS API call failed (service error, network failure or timeout).
    #[error(transparent)]
    Service(Box<ServiceFailure>),
    /// A batch call kept returning unprocessed or failed entries until the retry budget ran out.
    #[error(
        "{service} {operation} on {resource}: {remaining} of {total} entries still not processed after \
         {attempts} attempts ({detail}); back off and retry"
    )]
    Unprocessed {
        service: &'static str,
        operation: &'static str,
        resource: String,
        remaining: usize,
        total: usize,
        attempts: u32,
        detail: String,
    },
    /// A request AWS will never accept as sent (a message rejected as the sender's fault).
    #[error(transparent)]
    Rejected(Box<Rejection>),
    /// An item in a table does not have the shape this crate writes.
    #[error(
        "table {table}: item {key} is malformed: {detail} (fix: the item was not written by this version of \
         filetrail; delete or rewrite it)"
    )]
    Malformed { table: String, key: String, detail: String },
    /// A pagination cursor that this store did not hand out.
    #[error("cursor {cursor:?} is not one this store returned: {detail} (fix: pass the cursor back verbatim)")]
    BadCursor { cursor: String, detail: String },
    /// An update addressed a record that does not exist.
    #[error("{what} {id} does not exist in table {table} (fix: {fix})")]
    NotFound {
        what: &'static str,
        id: String,
        table: String,
        fix: String,
    },
    /// A value that could not be encoded for storage.
    #[error("could not encode {what}: {detail} (fix: this is a bug in filetrail-aws; report it)")]
    Encode { what: &'static str, detail: String },
    /// A secret that exists but does not hold what filetrail stores there.
    #[error("secret {secret_id}: {detail} (fix: {fix})")]
    BadSecret {
        secret_id: String,
        detail: String,
        fix: String,
    },
}

/// An AWS API call that failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{service} {operation} on {resource} failed: {code}: {message}{}",
    fix.as_ref().map(|f| format!(" (fix: {f})")).unwrap_or_default()
)]
pub struct ServiceFailure {
    pub class: RetryClass,
    pub service: &'static str,
    pub operation: &'static str,
    /// Table name, queue URL or secret id.
    pub resource: String,
    /// The service's error code (`ResourceNotFoundException`…), or `DispatchFailure` /
    /// `TimeoutError` when no answer came back.
    pub code: String,
    pub message: String,
    pub fix: Option<String>,
}

/// Something AWS refused as the sender's fault; re-sending it unchanged will not help.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{service} {operation} on {resource} rejected {what}: {code}: {message} (fix: {fix})")]
pub struct Rejection {
    pub service: &'static str,
    pub operation: &'static str,
    pub resource: String,
    pub what: String,
    pub code: String,
    pub message: String,
    pub fix: String,
}

impl AwsError {
    /// What a caller should do about this failure.
    pub fn class(&self) -> RetryClass {
        match self {
            Self::Service(f) => f.class.clone(),
            Self::Unprocessed { .. } => RetryClass::Backoff,
            Self::Rejected(_)
            | Self::Malformed { .. }
            | Self::BadCursor { .. }
            | Self::NotFound { .. }
            | Self::Encode { .. }
            | Self::BadSecret { .. } => RetryClass::Terminal,
        }
    }

    /// A short machine-readable code for status pages and logs.
    pub fn code(&self) -> &str {
        match self {
            Self::Service(f) => &f.code,
            Self::Rejected(r) => &r.code,
            Self::Unprocessed { .. } => "Unprocessed",
            Self::Malformed { .. } => "MalformedItem",
            Self::BadCursor { .. } => "BadCursor",
            Self::NotFound { .. } => "NotFound",
            Self::BadSecret { .. } => "BadSecret",
            Self::Encode { .. } => "EncodeError",
        }
    }

    /// What a person must do, when retrying will not help.
    pub fn fix(&self) -> Option<String> {
        match self {
            Self::Service(f) => f.fix.clone(),
            Self::Rejected(r) => Some(r.fix.clone()),
            Self::Unprocessed { .. } => None,
            Self::NotFound { fix, .. } | Self::BadSecret { fix, .. } => Some(fix.clone()),
            Self::Malformed { .. } => {
                Some("the item was not written by this version of filetrail; delete or rewrite it".into())
            }
            Self::BadCursor { .. } => Some("pass the cursor back verbatim".into()),
            Self::Encode { .. } => Some("this is a bug in filetrail-aws; report it".into()),
        }
    }
}

impl From<AwsError> for PortError {
    fn from(err: AwsError) -> Self {
        // The message already carries the fix; keep `fix` too so status pages can show it alone.
        PortError {
            class: err.class(),
            code: err.code().to_owned(),
            fix: err.fix(),
            message: message_without_fix(&err),
        }
    }
}

/// The error's message without its trailing " (fix: …)", which `PortError` appends itself.
fn message_without_fix(err: &AwsError) -> String {
    let full = err.to_string();
    match err.fix() {
        Some(fix) => full
            .strip_suffix(&format!(" (fix: {fix})"))
            .map(str::to_owned)
            .unwrap_or(full),
        None => full,
    }
}

/// The AWS resource a call addressed, for error messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    pub service: &'static str,
    /// Table name, queue URL or secret id.
    pub resource: &'a str,
    /// The setting that names the resource (`FILETRAIL_STATE_TABLE`…), for the fix.
    pub setting: &'static str,
}

/// Error codes AWS uses for throttling and transient service faults: retry with backoff.
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "TransactionConflictException",
    "TransactionInProgressException",
    "ReplicatedWriteConflictException",
    "InternalServerError",
    "InternalFailure",
    "InternalServiceError",
    "InternalServiceErrorException",
    "ServiceUnavailable",
    "RequestThrottled",
    "KmsThrottled",
    "KMSThrottlingException",
];

/// Classifies an AWS error code and HTTP status: throttling and 5xx back off, the rest is terminal.
pub(crate) fn classify(code: &str, status: Option<u16>) -> RetryClass {
    let transient =
        TRANSIENT_CODES.contains(&code) || code.contains("Throttl") || status.is_some_and(|s| s >= 500 || s == 429);
    if transient {
        RetryClass::Backoff
    } else {
        RetryClass::Terminal
    }
}

/// What a person should do about a terminal error code.
fn fix_for(code: &str, operation: &str, target: Target<'_>) -> String {
    let Target {
        service,
        resource,
        setting,
    } = target;
    match code {
        "ResourceNotFoundException" if service == "DynamoDB" => format!(
            "create table {resource} (deploy template.yaml, or run infra/local/setup for the local stack) or \
             point {setting} at an existing table"
        ),
        "ResourceNotFoundException" if service == "SecretsManager" => format!(
            "store the connection's app secret again (filetrail connection add) or correct the secret id \
             {resource}"
        ),
        "QueueDoesNotExist" | "AWS.SimpleQueueService.NonExistentQueue" => format!(
            "create queue {resource} (deploy template.yaml, or run infra/local/setup) or point {setting} at an \
             existing queue URL"
        ),
        c if c.starts_with("AccessDenied") || c == "AccessDeniedException" => {
            format!("grant the function's role {service} {operation} on {resource} (template.yaml policies)")
        }
        "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "InvalidSignatureException"
        | "ExpiredToken"
        | "ExpiredTokenException"
        | "MissingAuthenticationToken" => {
            "check the AWS credentials in the environment (role, profile or AWS_ACCESS_KEY_ID)".to_owned()
        }
        "ValidationException" => format!(
            "{resource} does not match the layout in template.yaml or the request is invalid; redeploy the \
             template (or check {setting})"
        ),
        _ => format!("check {resource} ({setting}) and the message above"),
    }
}

/// Maps an AWS SDK error to [`AwsError::Service`], classifying it for retries.
pub(crate) fn from_sdk<E>(operation: &'static str, target: Target<'_>, err: SdkError<E>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let (code, message) = match &err {
        SdkError::ServiceError(ctx) => (
            ctx.err().code().unwrap_or("Unknown").to_owned(),
            ctx.err()
                .message()
                .map(str::to_owned)
                .unwrap_or_else(|| DisplayErrorContext(&err).to_string()),
        ),
        SdkError::TimeoutError(_) => ("TimeoutError".to_owned(), DisplayErrorContext(&err).to_string()),
        SdkError::DispatchFailure(_) => ("DispatchFailure".to_owned(), DisplayErrorContext(&err).to_string()),
        SdkError::ResponseError(_) => ("ResponseError".to_owned(), DisplayErrorContext(&err).to_string()),
        _ => ("ConstructionFailure".to_owned(), DisplayErrorContext(&err).to_string()),
    };
    let class = match &err {
        SdkError::ServiceError(_) => classify(&code, status),
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => RetryClass::Backoff,
        _ => RetryClass::Terminal,
    };
    let fix = match class {
        RetryClass::Terminal => Some(fix_for(&code, operation, target)),
        _ => None,
    };
    AwsError::Service(Box::new(ServiceFailure {
        class,
        service: target.service,
        operation,
        resource: target.resource.to_owned(),
        code,
        message,
        fix,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_server_faults_back_off() {
        assert_eq!(
            classify("ProvisionedThroughputExceededException", Some(400)),
            RetryClass::Backoff
        );
        assert_eq!(classify("ThrottlingException", Some(400)), RetryClass::Backoff);
        assert_eq!(classify("Whatever", Some(503)), RetryClass::Backoff);
    }

    #[test]
    fn validation_and_missing_resources_are_terminal() {
        assert_eq!(classify("ValidationException", Some(400)), RetryClass::Terminal);
        assert_eq!(classify("ResourceNotFoundException", Some(400)), RetryClass::Terminal);
    }

    #[test]
    fn missing_table_fix_names_the_table_and_its_setting() {
        let fix = fix_for(
            "ResourceNotFoundException",
            "GetItem",
            Target {
                service: "DynamoDB",
                resource: "ft-state",
                setting: "FILETRAIL_STATE_TABLE",
            },
        );
        assert!(
            fix.contains("ft-state") && fix.contains("FILETRAIL_STATE_TABLE"),
            "{fix}"
        );
    }

    #[test]
    fn port_error_keeps_class_code_and_fix_without_repeating_the_fix() {
        let err = AwsError::NotFound {
            what: "drive",
            id: "b!1".into(),
            table: "ft-state".into(),
            fix: "run discovery".into(),
        };
        let port = PortError::from(err);
        assert!(port.is_terminal());
        assert_eq!(port.code, "NotFound");
        assert_eq!(
            port.to_string(),
            "drive b!1 does not exist in table ft-state (fix: run discovery)"
        );
    }
}
