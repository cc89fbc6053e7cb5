//! Typed settings every function reads at cold start.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use filetrail_core::budget::Deadline;

/// Variable: seconds kept back before the invocation deadline to checkpoint and hand over.
pub const TIME_MARGIN_VAR: &str = "FILETRAIL_TIME_MARGIN_SECS";
/// Variable: stop after this many pages per invocation (local runs and tests force continuations
/// with it; unset in AWS).
pub const MAX_PAGES_VAR: &str = "FILETRAIL_MAX_PAGES_PER_INVOCATION";
/// Variable: how long a connection's credentials are reused before Secrets Manager is read again.
pub const CREDENTIALS_TTL_VAR: &str = "FILETRAIL_CREDENTIALS_TTL_SECS";

/// Default margin: a Graph call with its retries fits in a minute (the retry policy's total wait
/// is bounded well below it), and a checkpoint plus an SQS send take well under a second.
pub const DEFAULT_TIME_MARGIN: Duration = Duration::from_secs(60);
/// Default credential reuse: a secret rotated with `filetrail connection set-secret` is picked up
/// within five minutes.
pub const DEFAULT_CREDENTIALS_TTL: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
#[error("{var}={value:?} is not valid: {reason}; fix the function's environment (template.yaml)")]
pub struct SettingsError {
    pub var: &'static str,
    pub value: String,
    pub reason: String,
}

/// Settings shared by every function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSettings {
    pub time_margin: Duration,
    pub max_pages_per_invocation: Option<u64>,
    pub credentials_ttl: Duration,
}

impl FunctionSettings {
    pub fn from_env_map(env: &HashMap<String, String>) -> Result<Self, SettingsError> {
        Ok(Self {
            time_margin: secs(env, TIME_MARGIN_VAR)?.unwrap_or(DEFAULT_TIME_MARGIN),
            max_pages_per_invocation: number(env, MAX_PAGES_VAR)?,
            credentials_ttl: secs(env, CREDENTIALS_TTL_VAR)?.unwrap_or(DEFAULT_CREDENTIALS_TTL),
        })
    }

    /// The budget of one invocation that must end by `deadline`: the configured margin, but at
    /// most a quarter of the time left, so a short timeout (the local runner's) still leaves room
    /// for work.
    pub fn budget(&self, deadline: Instant) -> Deadline {
        self.time_budget(deadline).with_max_units(self.max_pages_per_invocation)
    }

    /// [`Self::budget`] without the page cap: for a scheduled function whose unfinished work
    /// waits for the next schedule rather than a continuation (the audit feed's poll), which a
    /// page cap meant to exercise continuations would only slow down.
    pub fn time_budget(&self, deadline: Instant) -> Deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        Deadline::new(deadline, self.time_margin.min(left / 4))
    }
}

fn number(env: &HashMap<String, String>, var: &'static str) -> Result<Option<u64>, SettingsError> {
    match env.get(var).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse::<u64>().map(Some).map_err(|e| SettingsError {
            var,
            value: v.to_owned(),
            reason: format!("expected a whole number ({e})"),
        }),
    }
}

fn secs(env: &HashMap<String, String>, var: &'static str) -> Result<Option<Duration>, SettingsError> {
    Ok(number(env, var)?.map(Duration::from_secs))
}

/// The process environment as a map (what a Lambda sees).
pub fn process_env() -> HashMap<String, String> {
    std::env::vars().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use filetrail_core::budget::Budget;

    #[test]
    fn a_short_deadline_still_leaves_time_for_several_pages() {
        let s = FunctionSettings::from_env_map(&HashMap::new()).unwrap_or_else(|e| panic!("{e}"));
        let budget = s.budget(Instant::now() + Duration::from_secs(20));
        assert!(budget.has_time_for_more());
        assert!(
            budget.has_time_for_more(),
            "a 60 s margin must not swallow a 20 s invocation"
        );
    }

    #[test]
    fn defaults_apply_when_unset_and_bad_values_name_the_variable() {
        let s = FunctionSettings::from_env_map(&HashMap::new()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.time_margin, DEFAULT_TIME_MARGIN);
        assert_eq!(s.max_pages_per_invocation, None);
        let env = HashMap::from([(MAX_PAGES_VAR.to_owned(), "ten".to_owned())]);
        let err = FunctionSettings::from_env_map(&env)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains(MAX_PAGES_VAR) && err.contains("\"ten\""), "{err}");
    }
}
