//! Template conditions, evaluated as CloudFormation does at deploy time: each entry of
//! `Conditions` against the parameter values, then every `Fn::If` replaced by the branch it
//! picks, every `!Ref AWS::NoValue` property removed, and every resource whose `Condition` is
//! false left out. What remains is the template as deployed with those parameter values.
//!
//! Condition functions: <https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/intrinsic-function-reference-conditions.html>
//! (`Fn::And`, `Fn::Equals`, `Fn::If`, `Fn::Not`, `Fn::Or`, and `Condition` naming another
//! condition); `AWS::NoValue`: <https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/pseudo-parameter-reference.html>.

use std::collections::BTreeMap;

use serde_yaml::{Mapping, Value};

use super::{TemplateError, invalid};

/// The template `doc` as deployed with `params` (name → value): conditions evaluated, `Fn::If`
/// resolved, `AWS::NoValue` properties and resources of false conditions removed.
///
/// # Errors
/// A condition that names an unknown condition or parameter, or that is not built from the
/// condition functions, with its path.
pub fn resolve(doc: &Value, params: &BTreeMap<String, String>) -> Result<Value, TemplateError> {
    let mut values = BTreeMap::new();
    if let Some(conditions) = doc.get("Conditions").and_then(Value::as_mapping) {
        let mut evaluator = Evaluator {
            conditions,
            params,
            values: &mut values,
            visiting: Vec::new(),
        };
        for name in conditions.keys().filter_map(Value::as_str) {
            evaluator.condition(name)?;
        }
    }
    let mut out = doc.clone();
    for section in ["Resources", "Outputs"] {
        if let Some(entries) = out.get_mut(section).and_then(Value::as_mapping_mut) {
            *entries = resolve_section(section, std::mem::take(entries), &values)?;
        }
    }
    Ok(out)
}

/// The entries of `Resources` or `Outputs` as deployed: those whose `Condition` is false left
/// out, `Fn::If` resolved in the others.
fn resolve_section(section: &str, entries: Mapping, values: &BTreeMap<String, bool>) -> Result<Mapping, TemplateError> {
    let mut kept = Mapping::new();
    for (id, entry) in entries {
        let at = format!("{section}.{}", id.as_str().unwrap_or("?"));
        if let Some(name) = entry.get("Condition") {
            let name = name
                .as_str()
                .ok_or_else(|| invalid(&at, "a Condition must name a condition"))?;
            if !named(values, name, &at)? {
                continue;
            }
        }
        if let Some(entry) = resolve_ifs(&entry, values, &at)? {
            kept.insert(id, entry);
        }
    }
    Ok(kept)
}

fn named(values: &BTreeMap<String, bool>, name: &str, at: &str) -> Result<bool, TemplateError> {
    values
        .get(name)
        .copied()
        .ok_or_else(|| invalid(at, format!("condition `{name}` is not defined under Conditions")))
}

/// The function name and argument of an intrinsic in short (`!If`) or long (`Fn::If:`) form.
fn intrinsic(value: &Value) -> Option<(String, &Value)> {
    match value {
        Value::Tagged(tagged) => {
            let name = tagged.tag.to_string();
            let name = name.trim_start_matches('!');
            Some((
                if name == "Ref" || name == "Condition" {
                    name.to_owned()
                } else {
                    format!("Fn::{name}")
                },
                &tagged.value,
            ))
        }
        Value::Mapping(map) if map.len() == 1 => {
            let (key, arg) = map.iter().next()?;
            let key = key.as_str()?;
            (key == "Ref" || key == "Condition" || key.starts_with("Fn::")).then(|| (key.to_owned(), arg))
        }
        _ => None,
    }
}

/// `value` with every `Fn::If` replaced by its chosen branch; `None` when `value` itself is
/// (or resolves to) `!Ref AWS::NoValue`, which removes it from its mapping or list.
fn resolve_ifs(value: &Value, conditions: &BTreeMap<String, bool>, at: &str) -> Result<Option<Value>, TemplateError> {
    if let Some((function, arg)) = intrinsic(value) {
        match function.as_str() {
            "Ref" if arg.as_str() == Some("AWS::NoValue") => return Ok(None),
            "Fn::If" => {
                let args = arg
                    .as_sequence()
                    .filter(|a| a.len() == 3)
                    .ok_or_else(|| invalid(at, "Fn::If takes [condition, value if true, value if false]"))?;
                let name = args[0]
                    .as_str()
                    .ok_or_else(|| invalid(at, "Fn::If's first element must name a condition"))?;
                let branch = if named(conditions, name, at)? {
                    &args[1]
                } else {
                    &args[2]
                };
                return resolve_ifs(branch, conditions, at);
            }
            _ => {}
        }
    }
    Ok(Some(match value {
        Value::Mapping(map) => {
            let mut out = Mapping::new();
            for (k, v) in map {
                let at = format!("{at}.{}", k.as_str().unwrap_or("?"));
                if let Some(v) = resolve_ifs(v, conditions, &at)? {
                    out.insert(k.clone(), v);
                }
            }
            Value::Mapping(out)
        }
        Value::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, v) in items.iter().enumerate() {
                if let Some(v) = resolve_ifs(v, conditions, &format!("{at}[{i}]"))? {
                    out.push(v);
                }
            }
            Value::Sequence(out)
        }
        Value::Tagged(tagged) => {
            let inner = resolve_ifs(&tagged.value, conditions, at)?.unwrap_or(Value::Null);
            Value::Tagged(Box::new(serde_yaml::value::TaggedValue {
                tag: tagged.tag.clone(),
                value: inner,
            }))
        }
        other => other.clone(),
    }))
}

struct Evaluator<'a> {
    conditions: &'a Mapping,
    params: &'a BTreeMap<String, String>,
    values: &'a mut BTreeMap<String, bool>,
    visiting: Vec<String>,
}

impl Evaluator<'_> {
    fn condition(&mut self, name: &str) -> Result<bool, TemplateError> {
        if let Some(&v) = self.values.get(name) {
            return Ok(v);
        }
        let at = format!("Conditions.{name}");
        if self.visiting.iter().any(|n| n == name) {
            return Err(invalid(at, "conditions refer to each other in a cycle"));
        }
        let definition = self
            .conditions
            .get(name)
            .ok_or_else(|| invalid(&at, format!("condition `{name}` is not defined under Conditions")))?;
        self.visiting.push(name.to_owned());
        let value = self.boolean(definition, &at)?;
        self.visiting.pop();
        self.values.insert(name.to_owned(), value);
        Ok(value)
    }

    fn boolean(&mut self, value: &Value, at: &str) -> Result<bool, TemplateError> {
        let (function, arg) = intrinsic(value)
            .ok_or_else(|| invalid(at, "a condition must be Fn::Equals, Fn::Not, Fn::And or Fn::Or"))?;
        let operands = |n: Option<usize>| {
            arg.as_sequence()
                .filter(|a| n.is_none_or(|n| a.len() == n))
                .ok_or_else(|| invalid(at, format!("{function} takes a list of conditions")))
        };
        match function.as_str() {
            "Condition" => {
                let name = arg
                    .as_str()
                    .ok_or_else(|| invalid(at, "Condition takes a condition name"))?;
                self.condition(name)
            }
            "Fn::Not" => Ok(!self.boolean(&operands(Some(1))?[0], at)?),
            "Fn::And" => {
                let mut all = true;
                for operand in operands(None)? {
                    all &= self.boolean(operand, at)?;
                }
                Ok(all)
            }
            "Fn::Or" => {
                let mut any = false;
                for operand in operands(None)? {
                    any |= self.boolean(operand, at)?;
                }
                Ok(any)
            }
            "Fn::Equals" => {
                let pair = arg
                    .as_sequence()
                    .filter(|a| a.len() == 2)
                    .ok_or_else(|| invalid(at, "Fn::Equals takes [value, value]"))?;
                Ok(self.scalar(&pair[0], at)? == self.scalar(&pair[1], at)?)
            }
            other => Err(invalid(at, format!("`{other}` is not a condition function"))),
        }
    }

    /// An operand of `Fn::Equals`: a literal or `!Ref Parameter`.
    fn scalar(&self, value: &Value, at: &str) -> Result<String, TemplateError> {
        match value {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            other => match intrinsic(other) {
                Some((function, arg)) if function == "Ref" => {
                    let name = arg.as_str().unwrap_or_default();
                    self.params.get(name).cloned().ok_or_else(|| {
                        invalid(
                            at,
                            format!("`!Ref {name}` in a condition must name a parameter with a value"),
                        )
                    })
                }
                _ => Err(invalid(at, "Fn::Equals compares literals and parameter references")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(yaml: &str, params: &[(&str, &str)]) -> Value {
        let doc: Value = serde_yaml::from_str(yaml).unwrap();
        let params = params.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        resolve(&doc, &params).unwrap()
    }

    const DOC: &str = r#"
Conditions:
  HasKey: !Not [!Equals [!Ref Key, ""]]
  Both: {"Fn::And": [{Condition: HasKey}, !Equals [!Ref Mode, strict]]}
Resources:
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      SSESpecification:
        SSEEnabled: true
        SSEType: !If [HasKey, KMS, !Ref AWS::NoValue]
        KMSMasterKeyId: {"Fn::If": [HasKey, !Ref Key, {Ref: AWS::NoValue}]}
      Tags:
        - !If [Both, {Key: strict, Value: "yes"}, !Ref AWS::NoValue]
  Subscription:
    Type: AWS::SNS::Subscription
    Condition: HasKey
"#;

    #[test]
    fn a_false_condition_drops_no_value_properties_and_conditional_resources() {
        let doc = resolved(DOC, &[("Key", ""), ("Mode", "strict")]);
        let sse = &doc["Resources"]["Table"]["Properties"]["SSESpecification"];
        assert_eq!(sse.get("SSEType"), None);
        assert_eq!(sse.get("KMSMasterKeyId"), None);
        assert_eq!(sse["SSEEnabled"], Value::Bool(true));
        assert_eq!(doc["Resources"]["Table"]["Properties"]["Tags"], Value::Sequence(vec![]));
        assert_eq!(doc["Resources"].get("Subscription"), None);
    }

    #[test]
    fn a_true_condition_picks_the_first_branch_in_short_and_long_form() {
        let doc = resolved(
            DOC,
            &[("Key", "arn:aws:kms:eu-west-1:111122223333:key/k"), ("Mode", "strict")],
        );
        let sse = &doc["Resources"]["Table"]["Properties"]["SSESpecification"];
        assert_eq!(sse["SSEType"], Value::String("KMS".into()));
        let key: Value = serde_yaml::from_str("!Ref Key").unwrap();
        assert_eq!(
            sse["KMSMasterKeyId"], key,
            "the branch is kept as written, to be resolved later"
        );
        assert_eq!(
            doc["Resources"]["Table"]["Properties"]["Tags"][0]["Key"],
            Value::String("strict".into())
        );
        assert!(doc["Resources"].get("Subscription").is_some());
    }

    #[test]
    fn unknown_conditions_and_cycles_are_named() {
        let doc: Value = serde_yaml::from_str("Conditions:\n  A: !Condition B\n  B: !Condition A\n").unwrap();
        let err = resolve(&doc, &BTreeMap::new()).unwrap_err().to_string();
        assert!(err.contains("cycle"), "{err}");
        let doc: Value =
            serde_yaml::from_str("Resources:\n  T:\n    Type: X\n    Properties:\n      P: !If [Nope, a, b]\n")
                .unwrap();
        let err = resolve(&doc, &BTreeMap::new()).unwrap_err().to_string();
        assert!(err.contains("Nope") && err.contains("Resources.T"), "{err}");
    }
}
