//! The local stack: provisioning template.yaml's resources on a local AWS endpoint (moto) and
//! running functions the way AWS wires them ([`runner`]).
//!
//! `filetrail local provision` is what `infra/local/stack start` calls; it prints the settings the
//! CLI and the functions need, as shell assignments or JSON.

pub mod run;
pub mod runner;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use aws_config::SdkConfig;
use filetrail_aws::provision::{Provisioned, provision};
use filetrail_aws::template::Template;

pub use runner::{
    EventSink, InvocationOutcome, InvocationSource, LocalFunction, RunReport, RunStats, Runner, RunnerError,
    RunnerEvent, RunnerHandle, RunnerOptions, ScheduleMode, StopReason,
};

/// Stack name of the local stack unless `FILETRAIL_STACK_NAME` says otherwise: resources are
/// named `filetrail-local-StateTable`, ….
pub const DEFAULT_STACK_NAME: &str = "filetrail-local";
/// Environment variable naming the local stack.
pub const STACK_NAME_VAR: &str = "FILETRAIL_STACK_NAME";

/// How `filetrail local provision` prints what it provisioned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// `KEY='value'` lines, to source in a shell (`FILETRAIL_STATE_TABLE='…'`).
    #[default]
    Env,
    /// `{"stack_name", "settings": {…}, "resources": {logical id: {kind, name, arn, url}}}`.
    Json,
}

/// `filetrail local provision`: create template.yaml's tables, queues and bucket on a local
/// endpoint.
#[derive(Debug, Clone, clap::Args)]
pub struct ProvisionArgs {
    /// The SAM template to provision from.
    #[arg(long, default_value = "template.yaml")]
    pub template: PathBuf,
    /// Prefix of every physical name (`{stack}-{LogicalId}`).
    #[arg(long, env = STACK_NAME_VAR, default_value = DEFAULT_STACK_NAME)]
    pub stack_name: String,
    /// The local AWS endpoint (moto), e.g. http://127.0.0.1:5000. Only loopback endpoints are
    /// accepted: deploy to AWS with `sam deploy`.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: String,
    #[arg(long, value_enum, default_value_t = OutputFormat::Env)]
    pub format: OutputFormat,
}

/// Fails unless `endpoint` is an `http(s)://` URL on a loopback address.
fn ensure_loopback(endpoint: &str) -> anyhow::Result<()> {
    let url = url_host(endpoint).with_context(|| format!("endpoint {endpoint:?} is not an http(s) URL"))?;
    let loopback = url == "localhost"
        || url.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        || url
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::Ipv6Addr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!(
            "endpoint {endpoint} is not on loopback; `filetrail local` only provisions a local stack (deploy to AWS with `sam deploy`)"
        );
    }
    Ok(())
}

fn url_host(endpoint: &str) -> Option<&str> {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))?;
    let authority = rest.split('/').next()?;
    if authority.starts_with('[') {
        return authority.split_inclusive(']').next();
    }
    authority.split(':').next()
}

/// Reads the template, connects to the local endpoint and provisions the stack. Used by
/// `filetrail local provision`, `filetrail local run` and the end-to-end tests.
pub async fn provision_local(
    template_path: &Path,
    endpoint: &str,
    stack_name: &str,
) -> anyhow::Result<(SdkConfig, Template, Provisioned)> {
    ensure_loopback(endpoint)?;
    let template = Template::from_path(template_path)?;
    let sdk = filetrail_aws::moto::sdk_config_for(Some(endpoint)).await;
    let provisioned = provision(&sdk, &template, stack_name)
        .await
        .with_context(|| format!("provisioning {} on {endpoint}", template_path.display()))?;
    Ok((sdk, template, provisioned))
}

/// Single-quotes a value for a POSIX shell.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// The settings `provision` prints: the functions' `FILETRAIL_*` variables (see
/// [`Provisioned::cli_env`]) plus the stack name.
pub fn settings(template: &Template, provisioned: &Provisioned) -> anyhow::Result<BTreeMap<String, String>> {
    let mut settings = provisioned.cli_env(template)?;
    settings.insert(STACK_NAME_VAR.to_owned(), provisioned.stack_name.clone());
    Ok(settings)
}

/// Runs `filetrail local provision` and prints the settings to stdout.
pub async fn provision_command(args: &ProvisionArgs) -> anyhow::Result<()> {
    let (_, template, provisioned) = provision_local(&args.template, &args.endpoint_url, &args.stack_name).await?;
    let settings = settings(&template, &provisioned)?;
    match args.format {
        OutputFormat::Env => {
            for (name, value) in &settings {
                println!("{name}={}", shell_quote(value));
            }
        }
        OutputFormat::Json => {
            let doc = serde_json::json!({
                "stack_name": provisioned.stack_name,
                "settings": settings,
                "resources": provisioned.resources,
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_endpoints_are_accepted() {
        assert!(ensure_loopback("http://127.0.0.1:5000").is_ok());
        assert!(ensure_loopback("http://localhost:5000/").is_ok());
        assert!(ensure_loopback("http://[::1]:5000").is_ok());
        assert!(ensure_loopback("https://dynamodb.us-east-1.amazonaws.com").is_err());
        assert!(ensure_loopback("10.0.0.1:5000").is_err());
    }

    #[test]
    fn shell_quoting_survives_single_quotes() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
        assert_eq!(shell_quote("http://127.0.0.1:1/q"), "'http://127.0.0.1:1/q'");
    }
}
