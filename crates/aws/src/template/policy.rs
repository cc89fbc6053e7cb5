//! The IAM statements template.yaml gives each function, resolved for a provisioned stack, and
//! whether they allow a call: what a function's role would answer in AWS, so a local run can
//! prove every call it made is allowed (moto itself allows everything).
//!
//! Evaluation follows the IAM policy evaluation logic for one identity-based policy
//! (<https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html>):
//! a call is allowed when a statement names its action (case-insensitive, `*` and `?`
//! wildcards) and its resource (case-sensitive, same wildcards). Conditions only narrow an
//! allow (here: which services may use the customer key) and are not evaluated; a `Deny`,
//! `NotAction` or `NotResource` statement, or a policy that is not an inline document (a
//! managed policy ARN, a SAM policy template), is refused rather than guessed at.

use std::collections::BTreeMap;

use serde_yaml::Value;

use super::{Expr, Template, TemplateError};
use crate::provision::Provisioned;

/// One `Allow` statement, its resources resolved to ARNs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sid: Option<String>,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
}

/// A function's statements.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FunctionPolicy {
    pub statements: Vec<Statement>,
}

impl FunctionPolicy {
    /// The statement that allows `action` on `resource`, if one does.
    pub fn allowing(&self, action: &str, resource: &str) -> Option<&Statement> {
        self.statements.iter().find(|s| {
            s.actions
                .iter()
                .any(|a| matches(&a.to_ascii_lowercase(), &action.to_ascii_lowercase()))
                && s.resources.iter().any(|r| matches(r, resource))
        })
    }
}

/// The policies of every `AWS::Serverless::Function` of the template `text` as deployed in
/// `provisioned` (its parameter values applied to the conditions), by logical id.
///
/// # Errors
/// When the template does not parse, a policy is not an inline document of `Allow` statements
/// with `Action` and `Resource`, or a resource does not resolve in this stack.
pub fn function_policies(text: &str, provisioned: &Provisioned) -> anyhow::Result<BTreeMap<String, FunctionPolicy>> {
    let deployed = Template::deployed_yaml(text, &provisioned.parameters)?;
    let resources = deployed
        .get("Resources")
        .and_then(Value::as_mapping)
        .ok_or_else(|| anyhow::anyhow!("the template has no Resources"))?;
    let mut out = BTreeMap::new();
    for (id, resource) in resources {
        let id = id.as_str().unwrap_or_default();
        if resource.get("Type").and_then(Value::as_str) != Some("AWS::Serverless::Function") {
            continue;
        }
        let mut policy = FunctionPolicy::default();
        let documents = resource
            .get("Properties")
            .and_then(|p| p.get("Policies"))
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default();
        for (n, document) in documents.iter().enumerate() {
            let at = format!("Resources.{id}.Properties.Policies[{n}]");
            let statements = document
                .get("Statement")
                .ok_or_else(|| anyhow::anyhow!("{at}: only inline policy documents are evaluated"))?;
            for (m, statement) in list(statements).iter().enumerate() {
                policy.statements.push(self::statement(
                    statement,
                    provisioned,
                    &format!("{at}.Statement[{m}]"),
                )?);
            }
        }
        out.insert(id.to_owned(), policy);
    }
    Ok(out)
}

fn statement(value: &Value, provisioned: &Provisioned, at: &str) -> anyhow::Result<Statement> {
    for unsupported in ["NotAction", "NotResource", "NotPrincipal"] {
        anyhow::ensure!(value.get(unsupported).is_none(), "{at}: {unsupported} is not evaluated");
    }
    let effect = value.get("Effect").and_then(Value::as_str);
    anyhow::ensure!(
        effect == Some("Allow"),
        "{at}: only Allow statements are evaluated, found {effect:?}"
    );
    let actions = list(value.get("Action").ok_or_else(|| anyhow::anyhow!("{at}: no Action"))?)
        .iter()
        .map(|a| {
            a.as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow::anyhow!("{at}: an Action is not a string"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let resources = list(
        value
            .get("Resource")
            .ok_or_else(|| anyhow::anyhow!("{at}: no Resource"))?,
    )
    .iter()
    .map(|r| -> anyhow::Result<String> {
        let expr = Expr::parse(r, at).map_err(|e: TemplateError| anyhow::anyhow!(e))?;
        Ok(provisioned.resolve(&expr)?)
    })
    .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Statement {
        sid: value.get("Sid").and_then(Value::as_str).map(str::to_owned),
        actions,
        resources,
    })
}

/// A YAML value that may be one item or a list of them.
fn list(value: &Value) -> Vec<Value> {
    match value {
        Value::Sequence(items) => items.clone(),
        other => vec![other.clone()],
    }
}

/// IAM's wildcard match: `*` any run of characters (none included), `?` any one character.
fn matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(c) if *c == '?' || *c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_iam_matches_them() {
        assert!(matches("dynamodb:*", "dynamodb:putitem"));
        assert!(matches(
            "arn:aws:dynamodb:us-east-1:1:table/s-Events/index/*",
            "arn:aws:dynamodb:us-east-1:1:table/s-Events/index/by_file"
        ));
        assert!(!matches(
            "arn:aws:dynamodb:us-east-1:1:table/s-Events",
            "arn:aws:dynamodb:us-east-1:1:table/s-Events/index/by_file"
        ));
        assert!(matches(
            "arn:aws:s3:::b/quarantine/*",
            "arn:aws:s3:::b/quarantine/c/x.json"
        ));
        assert!(!matches("arn:aws:s3:::b/quarantine/*", "arn:aws:s3:::b/exports/x"));
        assert!(matches("secret:filetrail/s/*", "secret:filetrail/s/contoso/app-AbCdEf"));
        assert!(matches("a?c", "abc") && !matches("a?c", "ac"));
        assert!(matches("*", "") && matches("a*", "a") && !matches("a", ""));
    }

    #[test]
    fn a_statement_allows_only_its_actions_on_its_resources() {
        let policy = FunctionPolicy {
            statements: vec![Statement {
                sid: Some("StateTable".into()),
                actions: vec!["dynamodb:GetItem".into(), "dynamodb:Query".into()],
                resources: vec!["arn:t/State".into(), "arn:t/State/index/*".into()],
            }],
        };
        assert!(policy.allowing("dynamodb:getitem", "arn:t/State").is_some());
        assert!(policy.allowing("dynamodb:Query", "arn:t/State/index/gsi1").is_some());
        assert!(policy.allowing("dynamodb:DeleteItem", "arn:t/State").is_none());
        assert!(policy.allowing("dynamodb:GetItem", "arn:t/Events").is_none());
    }
}
