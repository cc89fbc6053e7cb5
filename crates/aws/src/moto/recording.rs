//! The AWS calls moto's recorder saw, as IAM authorises them: who made each (the access key
//! of its SigV4 signature), the IAM action and the ARNs of the resources it touched.
//!
//! moto does not enforce IAM, so a call a function's policy does not allow would pass every
//! local test and fail with `AccessDenied` in AWS. Recording the calls of a local run and
//! checking each against the function's statements in template.yaml
//! ([`crate::template::policy`]) closes that gap. The mapping of operations to actions follows
//! the Service Authorization Reference
//! (<https://docs.aws.amazon.com/service-authorization/latest/reference/reference_policies_actions-resources-contextkeys.html>):
//! `SendMessageBatch` is authorised by `sqs:SendMessage`, `DeleteMessageBatch` by
//! `sqs:DeleteMessage`; S3 `HeadObject` by `s3:GetObject`, `ListObjectsV2` by `s3:ListBucket`
//! on the bucket, a copy by `s3:GetObject` on its source and `s3:PutObject` on its target.

use anyhow::Context as _;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

/// One AWS call as IAM sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsCall {
    /// The access key id the request was signed with.
    pub access_key: String,
    /// One entry per authorisation the call needs: (IAM action, resource ARN).
    pub needs: Vec<(String, String)>,
    /// `METHOD url [target]`, to name the call in a report.
    pub request: String,
}

#[derive(Debug, Deserialize)]
struct Recorded {
    headers: std::collections::HashMap<String, String>,
    method: String,
    url: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_encoded: bool,
}

/// Reads a recording (moto's JSON lines) into calls. Requests without a SigV4 signature (moto's
/// own API) are left out; an operation this reader does not know is kept with the action
/// `unknown:{service}:{operation}`, so a check fails on it rather than pass it by.
///
/// # Errors
/// When a line is not a recorded request.
pub fn calls(recording: &str, region: &str, account: &str) -> anyhow::Result<Vec<AwsCall>> {
    let mut out = Vec::new();
    for (n, line) in recording.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let recorded: Recorded =
            serde_json::from_str(line).with_context(|| format!("line {} of the recording is not a request", n + 1))?;
        if let Some(call) = call_of(&recorded, region, account)? {
            out.push(call);
        }
    }
    Ok(out)
}

fn header<'a>(r: &'a Recorded, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn call_of(r: &Recorded, region: &str, account: &str) -> anyhow::Result<Option<AwsCall>> {
    // `AWS4-HMAC-SHA256 Credential=AKID/20261207/us-east-1/dynamodb/aws4_request, …`
    let Some(credential) = header(r, "Authorization").and_then(|a| a.split("Credential=").nth(1)) else {
        return Ok(None);
    };
    let mut scope = credential.split(['/', ',']);
    let access_key = scope.next().unwrap_or_default().to_owned();
    let service = scope.nth(2).unwrap_or_default().to_owned();
    let body = match (&r.body, r.body_encoded) {
        (Some(b), true) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .context("a recorded body is not base64")?,
        (Some(b), false) => b.clone().into_bytes(),
        (None, _) => Vec::new(),
    };
    let target = header(r, "X-Amz-Target").unwrap_or_default();
    let operation = target.rsplit('.').next().unwrap_or_default();
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let needs = match service.as_str() {
        "dynamodb" => dynamodb(operation, &json, region, account),
        "sqs" => sqs(operation, &json, region, account),
        "secretsmanager" => secrets(operation, &json, region, account),
        "s3" => s3(r, &body),
        other => vec![(format!("unknown:{other}:{operation}"), "*".to_owned())],
    };
    Ok(Some(AwsCall {
        access_key,
        needs,
        request: format!("{} {} {target}", r.method, r.url).trim_end().to_owned(),
    }))
}

fn dynamodb(operation: &str, body: &Value, region: &str, account: &str) -> Vec<(String, String)> {
    let table = |name: &str| format!("arn:aws:dynamodb:{region}:{account}:table/{name}");
    let action = format!("dynamodb:{operation}");
    match operation {
        "BatchGetItem" | "BatchWriteItem" => body["RequestItems"]
            .as_object()
            .into_iter()
            .flat_map(|items| items.keys())
            .map(|name| (action.clone(), table(name)))
            .collect(),
        "TransactWriteItems" | "TransactGetItems" => body["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item.as_object()?.iter().next())
            .map(|(kind, part)| {
                let each = match kind.as_str() {
                    "Put" => "PutItem",
                    "Update" => "UpdateItem",
                    "Delete" => "DeleteItem",
                    "ConditionCheck" => "ConditionCheckItem",
                    _ => "GetItem",
                };
                (
                    format!("dynamodb:{each}"),
                    table(part["TableName"].as_str().unwrap_or_default()),
                )
            })
            .collect(),
        _ => {
            let name = body["TableName"].as_str().unwrap_or_default();
            let resource = match body["IndexName"].as_str() {
                Some(index) => format!("{}/index/{index}", table(name)),
                None => table(name),
            };
            vec![(action, resource)]
        }
    }
}

fn sqs(operation: &str, body: &Value, region: &str, account: &str) -> Vec<(String, String)> {
    let action = match operation {
        "SendMessageBatch" => "SendMessage",
        "DeleteMessageBatch" => "DeleteMessage",
        "ChangeMessageVisibilityBatch" => "ChangeMessageVisibility",
        other => other,
    };
    let queue = body["QueueUrl"]
        .as_str()
        .and_then(|url| url.trim_end_matches('/').rsplit('/').next())
        .unwrap_or("*");
    vec![(
        format!("sqs:{action}"),
        format!("arn:aws:sqs:{region}:{account}:{queue}"),
    )]
}

fn secrets(operation: &str, body: &Value, region: &str, account: &str) -> Vec<(String, String)> {
    let id = body["SecretId"].as_str().or(body["Name"].as_str()).unwrap_or("*");
    let arn = if id.starts_with("arn:") {
        id.to_owned()
    } else {
        // Secrets Manager appends six random characters to a secret's name in its ARN.
        format!("arn:aws:secretsmanager:{region}:{account}:secret:{id}-AbCdEf")
    };
    vec![(format!("secretsmanager:{operation}"), arn)]
}

fn s3(r: &Recorded, body: &[u8]) -> Vec<(String, String)> {
    // Path-style (the local endpoint): `/bucket/key?query`.
    let after_host = r.url.splitn(4, '/').nth(3).unwrap_or_default();
    let (path, query) = after_host.split_once('?').unwrap_or((after_host, ""));
    let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
    let key = decode(key);
    let object = |key: &str| format!("arn:aws:s3:::{bucket}/{key}");
    let copy_source = header(r, "x-amz-copy-source");
    match (r.method.as_str(), key.is_empty()) {
        ("GET" | "HEAD", false) => vec![("s3:GetObject".into(), object(&key))],
        ("PUT", false) => {
            let mut needs = vec![("s3:PutObject".into(), object(&key))];
            if let Some(source) = copy_source {
                let source = decode(source.trim_start_matches('/'));
                needs.push(("s3:GetObject".into(), format!("arn:aws:s3:::{source}")));
            }
            needs
        }
        ("DELETE", false) => vec![("s3:DeleteObject".into(), object(&key))],
        ("GET" | "HEAD", true) if !query.contains("notification") => {
            vec![("s3:ListBucket".into(), format!("arn:aws:s3:::{bucket}"))]
        }
        ("POST", true) if query.split('&').any(|p| p == "delete" || p.starts_with("delete=")) => {
            let text = String::from_utf8_lossy(body);
            text.split("<Key>")
                .skip(1)
                .filter_map(|rest| rest.split("</Key>").next())
                .map(|key| ("s3:DeleteObject".into(), object(key)))
                .collect()
        }
        (method, _) => vec![(format!("unknown:s3:{method} {path}?{query}"), "*".to_owned())],
    }
}

/// Percent-decodes a URL path segment (S3 keys arrive encoded).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 3)) {
            (b'%', Some(hex)) => match std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(b) => {
                    out.push(b);
                    i += 3;
                }
                None => {
                    out.push(b'%');
                    i += 1;
                }
            },
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn line(method: &str, url: &str, service: &str, target: Option<&str>, body: &str) -> String {
        let mut headers = serde_json::json!({
            "Authorization": format!(
                "AWS4-HMAC-SHA256 Credential=local-HashFileFunction/20261207/us-east-1/{service}/aws4_request, \
                 SignedHeaders=host, Signature=00"
            ),
        });
        if let Some(t) = target {
            headers["X-Amz-Target"] = t.into();
        }
        serde_json::json!({
            "headers": headers,
            "method": method,
            "url": url,
            "body": base64::engine::general_purpose::STANDARD.encode(body),
            "body_encoded": true,
        })
        .to_string()
    }

    #[test]
    fn each_call_is_read_as_the_actions_and_resources_iam_authorises() {
        let recording = [
            line(
                "POST",
                "http://127.0.0.1:5000/",
                "dynamodb",
                Some("DynamoDB_20120810.Query"),
                r#"{"TableName":"s-Events","IndexName":"by_file"}"#,
            ),
            line(
                "POST",
                "http://127.0.0.1:5000/",
                "dynamodb",
                Some("DynamoDB_20120810.BatchWriteItem"),
                r#"{"RequestItems":{"s-Inventory":[],"s-State":[]}}"#,
            ),
            line(
                "POST",
                "http://127.0.0.1:5000/",
                "sqs",
                Some("AmazonSQS.SendMessageBatch"),
                r#"{"QueueUrl":"http://127.0.0.1:5000/123456789012/s-HashQueue","Entries":[]}"#,
            ),
            line(
                "POST",
                "http://127.0.0.1:5000/",
                "secretsmanager",
                Some("secretsmanager.GetSecretValue"),
                r#"{"SecretId":"filetrail/s/contoso/app"}"#,
            ),
            line(
                "PUT",
                "http://127.0.0.1:5000/s-bucket/exports/events/dt%3D2026-12-07/part.json.gz?x-id=PutObject",
                "s3",
                None,
                "",
            ),
            line(
                "GET",
                "http://127.0.0.1:5000/s-bucket?list-type=2&prefix=scoping%2F",
                "s3",
                None,
                "",
            ),
            r#"{"headers":{},"method":"POST","url":"http://127.0.0.1:5000/moto-api/reset","body":""}"#.to_owned(),
        ]
        .join("\n");

        let calls = calls(&recording, "us-east-1", "123456789012").unwrap();

        let needs: Vec<(String, String)> = calls.iter().flat_map(|c| c.needs.clone()).collect();
        let want = [
            (
                "dynamodb:Query",
                "arn:aws:dynamodb:us-east-1:123456789012:table/s-Events/index/by_file",
            ),
            (
                "dynamodb:BatchWriteItem",
                "arn:aws:dynamodb:us-east-1:123456789012:table/s-Inventory",
            ),
            (
                "dynamodb:BatchWriteItem",
                "arn:aws:dynamodb:us-east-1:123456789012:table/s-State",
            ),
            ("sqs:SendMessage", "arn:aws:sqs:us-east-1:123456789012:s-HashQueue"),
            (
                "secretsmanager:GetSecretValue",
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:filetrail/s/contoso/app-AbCdEf",
            ),
            (
                "s3:PutObject",
                "arn:aws:s3:::s-bucket/exports/events/dt=2026-12-07/part.json.gz",
            ),
            ("s3:ListBucket", "arn:aws:s3:::s-bucket"),
        ];
        assert_eq!(
            needs,
            want.iter()
                .map(|(a, r)| ((*a).to_owned(), (*r).to_owned()))
                .collect::<Vec<_>>()
        );
        assert!(calls.iter().all(|c| c.access_key == "local-HashFileFunction"));
        assert_eq!(calls.len(), 6, "moto's own API is not an AWS call");
    }

    #[test]
    fn an_operation_it_does_not_know_is_kept_as_unknown() {
        let recording = line(
            "POST",
            "http://127.0.0.1:5000/",
            "kms",
            Some("TrentService.Decrypt"),
            "{}",
        );
        let calls = calls(&recording, "us-east-1", "123456789012").unwrap();
        assert_eq!(calls[0].needs, vec![("unknown:kms:Decrypt".to_owned(), "*".to_owned())]);
    }
}
