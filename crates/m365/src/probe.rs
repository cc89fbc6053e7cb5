//! Registration checks: does a new connection's app get a token, and does it hold every
//! application permission filetrail needs? `filetrail connection add` runs [`probe`] before it
//! stores anything.
//!
//! One real call per permission, each the cheapest that needs it: directory read
//! (`GET /users?$top=5&$select=id`), files read (a user's OneDrive, `GET /users/{id}/drive`),
//! the activity feed (`GET …/activity/feed/subscriptions/list` with a Management API token). Only
//! write mode is checked from the Graph token's `roles` claim (a write probe would change the
//! tenant), and `Mail.Read` too for email connections (filetrail never reads a mailbox to
//! register). The decisions ([`outcome_of`], [`roles_check`], [`ProbeReport`]) need no network.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use crate::activity::ActivityClient;
use crate::error::{AuthFailure, M365Error, ServiceErrorKind};
use crate::graph::GraphClient;

/// Users whose OneDrive the files check tries before giving up (a user without a licence has no
/// OneDrive: 404, <https://learn.microsoft.com/en-us/graph/api/drive-get>). Five keeps the check to at most six
/// Graph calls.
pub const FILES_PROBE_USERS: usize = 5;

/// An application permission filetrail may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Microsoft Graph `Directory.Read.All`: users, groups and transitive members.
    DirectoryRead,
    /// Microsoft Graph `Files.Read.All`: OneDrives, delta, content.
    FilesRead,
    /// Office 365 Management APIs `ActivityFeed.Read`: the audit feed.
    ActivityFeedRead,
    /// Microsoft Graph `Mail.Read`: sent items and attachments (email connections).
    MailRead,
    /// Microsoft Graph `Files.ReadWrite.All`: only for `--write-mode` (sharing revoke).
    FilesWrite,
}

impl Permission {
    /// The API the permission belongs to, as the Entra admin center names it.
    #[must_use]
    pub fn api(self) -> &'static str {
        match self {
            Self::ActivityFeedRead => "Office 365 Management APIs",
            _ => "Microsoft Graph",
        }
    }

    /// The permission's name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::DirectoryRead => "Directory.Read.All",
            Self::FilesRead => "Files.Read.All",
            Self::ActivityFeedRead => "ActivityFeed.Read",
            Self::MailRead => "Mail.Read",
            Self::FilesWrite => "Files.ReadWrite.All",
        }
    }

    /// The application id of the API the permission belongs to: an app manifest's
    /// `requiredResourceAccess[].resourceAppId`.
    #[must_use]
    pub fn resource_app_id(self) -> &'static str {
        match self {
            Self::ActivityFeedRead => MANAGEMENT_API_APP_ID,
            _ => GRAPH_APP_ID,
        }
    }

    /// The id of the application permission (the API's app role): an app manifest's
    /// `requiredResourceAccess[].resourceAccess[].id` with type `Role`. Graph's are listed in
    /// <https://learn.microsoft.com/en-us/graph/permissions-reference> ("All permissions",
    /// Application identifier); `ActivityFeed.Read` is the Office 365 Management APIs' app role
    /// (its service principal's `appRoles`).
    #[must_use]
    pub fn app_role_id(self) -> &'static str {
        match self {
            Self::DirectoryRead => "7ab1d382-f21e-4acd-a863-ba3e13f7da61",
            Self::FilesRead => "01d4889c-1287-42c6-ac1f-5d1e02578ef6",
            Self::ActivityFeedRead => "594c1fb6-4f81-4475-ae41-0c394909246c",
            Self::MailRead => "810c84a8-4a9e-49e6-bf7d-12d183f40d01",
            Self::FilesWrite => "75359482-378d-4052-8f01-80520e7db3cd",
        }
    }

    /// What filetrail does with it.
    #[must_use]
    pub fn purpose(self) -> &'static str {
        match self {
            Self::DirectoryRead => "list users, groups and their members",
            Self::FilesRead => "read OneDrives, their changes and file content",
            Self::ActivityFeedRead => "read the audit log of file activity",
            Self::MailRead => "read sent mail and its attachments",
            Self::FilesWrite => "remove sharing with `filetrail sharing revoke` (write mode)",
        }
    }

    /// Roles that also satisfy this permission (a broader or equivalent one).
    fn satisfied_by(self) -> &'static [&'static str] {
        match self {
            Self::DirectoryRead => &["Directory.Read.All", "Directory.ReadWrite.All"],
            Self::FilesRead => &[
                "Files.Read.All",
                "Files.ReadWrite.All",
                "Sites.Read.All",
                "Sites.ReadWrite.All",
                "Sites.FullControl.All",
            ],
            Self::ActivityFeedRead => &["ActivityFeed.Read"],
            Self::MailRead => &["Mail.Read", "Mail.ReadWrite"],
            Self::FilesWrite => &["Files.ReadWrite.All"],
        }
    }

    /// How an admin grants it, step by step in the Entra admin center.
    #[must_use]
    pub fn how_to_grant(self, client_id: &str) -> String {
        format!(
            "Entra admin center > App registrations > {client_id} > API permissions > Add a permission > {} > \
             Application permissions > {}, then Grant admin consent",
            self.api(),
            self.name()
        )
    }
}

/// The outcome of one check.
#[derive(Debug, Clone)]
pub enum Check {
    /// The call succeeded (or the token carries the role).
    Granted,
    /// The service refused for want of the permission (403 `Authorization_RequestDenied` /
    /// `accessDenied`, `AF10001`), or the token lacks the role.
    Missing { detail: String },
    /// The call could not tell (no user with a OneDrive, …): not a failure, said as a note.
    Unknown { note: String },
    /// The call failed for another reason (network, throttling that outlasted the retries, the
    /// audit log being off…): a failure with its own fix.
    Failed { error: M365Error },
}

/// Every check of one registration, in the order they ran.
#[derive(Debug, Clone, Default)]
pub struct ProbeReport {
    pub checks: Vec<(Permission, Check)>,
    /// The directory id the Graph token was issued for (its `tid` claim): a tenant named by
    /// its domain resolves to it.
    pub tenant_id: Option<String>,
}

impl ProbeReport {
    /// Permissions the app lacks, in check order.
    #[must_use]
    pub fn missing(&self) -> Vec<Permission> {
        self.checks
            .iter()
            .filter(|(_, c)| matches!(c, Check::Missing { .. }))
            .map(|(p, _)| *p)
            .collect()
    }

    /// Checks that failed for another reason than a missing permission.
    #[must_use]
    pub fn failures(&self) -> Vec<(Permission, &M365Error)> {
        self.checks
            .iter()
            .filter_map(|(p, c)| match c {
                Check::Failed { error } => Some((*p, error)),
                _ => None,
            })
            .collect()
    }

    /// Notes on checks that could not tell.
    #[must_use]
    pub fn notes(&self) -> Vec<(Permission, &str)> {
        self.checks
            .iter()
            .filter_map(|(p, c)| match c {
                Check::Unknown { note } => Some((*p, note.as_str())),
                _ => None,
            })
            .collect()
    }

    /// Whether the connection may be registered: nothing missing, nothing failed.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.missing().is_empty() && self.failures().is_empty()
    }

    /// The refusal an admin reads: every missing permission with what it is for and how to grant
    /// it, then every other failure with its fix. Empty when [`Self::passed`].
    #[must_use]
    pub fn problems(&self, client_id: &str) -> String {
        let mut out = String::new();
        let missing = self.missing();
        if !missing.is_empty() {
            out.push_str(&format!(
                "app {client_id} lacks {} application permission{} filetrail needs:\n",
                missing.len(),
                if missing.len() == 1 { "" } else { "s" }
            ));
            for p in &missing {
                out.push_str(&format!(
                    "  - {} {} (to {}): grant it in {}\n",
                    p.api(),
                    p.name(),
                    p.purpose(),
                    p.how_to_grant(client_id)
                ));
            }
            out.push_str("Admin consent can take a few minutes to reach new tokens; then run the command again.\n");
        }
        for (p, e) in self.failures() {
            out.push_str(&format!("checking {} failed: {}", p.name(), e.summary()));
            if let Some(fix) = e.fix() {
                out.push_str(&format!("; fix: {fix}"));
            }
            out.push('\n');
        }
        out
    }
}

/// What one probe call's result says about its permission: a 403 / `AF10001` refusal means the
/// permission is missing; any other error is a failure of its own.
#[must_use]
pub fn outcome_of<T>(result: &Result<T, M365Error>) -> Check {
    match result {
        Ok(_) => Check::Granted,
        Err(e) if denied(e) => Check::Missing {
            detail: format!("{}: {}", e.code(), e.summary()),
        },
        Err(e) => Check::Failed { error: e.clone() },
    }
}

fn service_kind(e: &M365Error) -> Option<ServiceErrorKind> {
    match e {
        M365Error::Service(s) => Some(s.kind),
        M365Error::RetriesExhausted { last, .. } => service_kind(last),
        _ => None,
    }
}

fn denied(e: &M365Error) -> bool {
    service_kind(e) == Some(ServiceErrorKind::AccessDenied)
}

fn not_found(e: &M365Error) -> bool {
    service_kind(e) == Some(ServiceErrorKind::NotFound)
}

/// Whether the token's `roles` carry `permission` (or one that includes it).
#[must_use]
pub fn roles_check(permission: Permission, roles: Option<&[String]>) -> Check {
    let roles = roles.unwrap_or_default();
    if permission
        .satisfied_by()
        .iter()
        .any(|r| roles.iter().any(|h| h.eq_ignore_ascii_case(r)))
    {
        Check::Granted
    } else {
        Check::Missing {
            detail: format!("the app's Graph token carries the roles [{}]", roles.join(", ")),
        }
    }
}

/// The `roles` claim of an access token (JWT), or `None` when it has none or is not a JWT. The
/// token is only read, never validated: the service that issued it is the one that checks it.
#[must_use]
pub fn token_roles(token: &str) -> Option<Vec<String>> {
    #[derive(Deserialize)]
    struct Claims {
        roles: Option<Vec<String>>,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice::<Claims>(&bytes).ok()?.roles
}

/// The `tid` claim of an access token (the directory id, a GUID, whatever name the token was
/// asked for with), or `None` when it has none or is not a JWT. Read, never validated.
#[must_use]
pub fn token_tenant(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Claims {
        tid: Option<String>,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice::<Claims>(&bytes)
        .ok()?
        .tid
        .map(|t| t.to_ascii_lowercase())
}

/// Whether an Entra refusal is about the credentials an admin typed (wrong tenant, app id or
/// secret), as opposed to a transient failure.
#[must_use]
pub fn credentials_refused(e: &M365Error) -> bool {
    match e {
        M365Error::Auth(a) => !a.failure.is_retryable(),
        M365Error::RetriesExhausted { last, .. } => credentials_refused(last),
        _ => false,
    }
}

/// What an admin registering a connection must do about an Entra refusal (the stored-connection
/// fixes mention `set-secret`, which does not apply before the connection exists).
#[must_use]
pub fn registration_fix(e: &M365Error, tenant_id: &str, client_id: &str) -> Option<String> {
    let M365Error::Auth(a) = e else {
        return match e {
            M365Error::RetriesExhausted { last, .. } => registration_fix(last, tenant_id, client_id),
            _ => e.fix().map(str::to_owned),
        };
    };
    Some(match a.failure {
        AuthFailure::InvalidSecret => format!(
            "the client secret is wrong: in Entra admin center > App registrations > {client_id} > Certificates & \
             secrets, copy the secret's Value (not its Secret ID), or create a new one, and pipe it to the command again"
        ),
        AuthFailure::ExpiredSecret => format!(
            "the client secret expired: create a new one in Entra admin center > App registrations > {client_id} > \
             Certificates & secrets and pipe its Value to the command again"
        ),
        AuthFailure::AppNotFound => format!(
            "no app {client_id} in tenant {tenant_id}: check --client-id (the Application (client) ID on the app's \
             Overview page) and --tenant-id (the Directory (tenant) ID); for an app registered in another tenant, \
             an admin of {tenant_id} must grant it admin consent first"
        ),
        AuthFailure::TenantNotFound => format!(
            "tenant {tenant_id} does not exist in this cloud: check --tenant-id (Entra admin center > Overview > \
             Tenant ID) and --cloud"
        ),
        _ => return a.fix.clone(),
    })
}

/// Which connection the checks are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// OneDrive: directory, files, activity feed.
    Cloud,
    /// Office 365 mail: directory, mail.
    Email,
}

/// Microsoft Graph's application id (`resourceAppId` in app manifests).
pub const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
/// The Office 365 Management APIs' application id.
pub const MANAGEMENT_API_APP_ID: &str = "c5393580-f805-4401-95e8-94b7a6ef2fc2";

/// The application permissions a registration needs: those [`probe`] checks for `kind`, or
/// (`None`) the write-mode app's, which [`probe_write_app`] checks.
#[must_use]
pub fn required(kind: Option<ProbeKind>) -> &'static [Permission] {
    match kind {
        Some(ProbeKind::Cloud) => &[
            Permission::DirectoryRead,
            Permission::FilesRead,
            Permission::ActivityFeedRead,
        ],
        Some(ProbeKind::Email) => &[Permission::DirectoryRead, Permission::MailRead],
        None => &[Permission::FilesWrite],
    }
}

/// The `requiredResourceAccess` of an app manifest granting `permissions` as application
/// permissions, one entry per API in order of first use
/// (<https://learn.microsoft.com/en-us/entra/identity-platform/reference-microsoft-graph-app-manifest#requiredresourceaccess-attribute>).
#[must_use]
pub fn required_resource_access(permissions: &[Permission]) -> serde_json::Value {
    let mut apis: Vec<(&str, Vec<serde_json::Value>)> = Vec::new();
    for p in permissions {
        let access = serde_json::json!({"id": p.app_role_id(), "type": "Role"});
        match apis.iter_mut().find(|(app, _)| *app == p.resource_app_id()) {
            Some((_, list)) => list.push(access),
            None => apis.push((p.resource_app_id(), vec![access])),
        }
    }
    serde_json::Value::Array(
        apis.into_iter()
            .map(|(app, access)| serde_json::json!({"resourceAppId": app, "resourceAccess": access}))
            .collect(),
    )
}

/// Runs the registration checks. The Graph token comes first: when Entra refuses it (bad secret,
/// tenant or client id) this fails with that error and nothing else is tried. Then one call per
/// permission; every missing permission is collected, not only the first.
///
/// # Errors
/// Only the Graph token failure; every other failure is a [`Check`] in the report.
pub async fn probe(
    graph: &GraphClient,
    activity: Option<&ActivityClient>,
    kind: ProbeKind,
) -> Result<ProbeReport, M365Error> {
    let token = graph.tokens().token().await?;
    let roles = token_roles(token.secret());
    let mut report = ProbeReport {
        tenant_id: token_tenant(token.secret()),
        ..ProbeReport::default()
    };

    #[derive(Deserialize)]
    struct Page {
        #[serde(default)]
        value: Vec<Id>,
    }
    #[derive(Deserialize)]
    struct Id {
        id: String,
    }
    let users = graph
        .get_json::<Page>(&format!("/users?$top={FILES_PROBE_USERS}&$select=id"))
        .await;
    report.checks.push((Permission::DirectoryRead, outcome_of(&users)));

    if kind == ProbeKind::Cloud {
        let files = match &users {
            Ok(page) => files_check(graph, page.value.iter().map(|u| u.id.as_str())).await,
            Err(_) => Check::Unknown {
                note: "not checked: it needs a user to look up, and listing users failed".to_owned(),
            },
        };
        report.checks.push((Permission::FilesRead, files));
        let feed = match activity {
            Some(a) => outcome_of(&a.list_subscriptions().await),
            None => Check::Unknown {
                note: "not checked: the tenant id is not a GUID".to_owned(),
            },
        };
        report.checks.push((Permission::ActivityFeedRead, feed));
    } else {
        report.checks.push((
            Permission::MailRead,
            roles_check(Permission::MailRead, roles.as_deref()),
        ));
    }
    Ok(report)
}

/// Checks a write-mode app (`filetrail connection write-mode`): Entra issues it a Graph token,
/// and the token carries `Files.ReadWrite.All`. Nothing is written.
///
/// # Errors
/// Only the Graph token failure; a missing role is a [`Check`] in the report.
pub async fn probe_write_app(graph: &GraphClient) -> Result<ProbeReport, M365Error> {
    let token = graph.tokens().token().await?;
    let roles = token_roles(token.secret());
    Ok(ProbeReport {
        tenant_id: token_tenant(token.secret()),
        checks: vec![(
            Permission::FilesWrite,
            roles_check(Permission::FilesWrite, roles.as_deref()),
        )],
    })
}

/// Graph application roles that can change OneDrive files or their sharing
/// (<https://learn.microsoft.com/en-us/graph/permissions-reference>).
const FILE_WRITE_ROLES: &[&str] = &[
    "Files.ReadWrite.All",
    "Sites.ReadWrite.All",
    "Sites.Manage.All",
    "Sites.FullControl.All",
];

/// The roles of a Graph token that can change files or sites: a pipeline app holding one makes
/// every function's token write-capable, which write mode's separate app is there to avoid.
#[must_use]
pub fn write_roles(token: &str) -> Vec<String> {
    token_roles(token)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| FILE_WRITE_ROLES.iter().any(|w| w.eq_ignore_ascii_case(r)))
        .collect()
}

/// `GET /users/{id}/drive` for up to [`FILES_PROBE_USERS`] users until one answers other than 404
/// (no OneDrive).
async fn files_check<'a>(graph: &GraphClient, users: impl Iterator<Item = &'a str>) -> Check {
    let mut tried = 0;
    for user in users.take(FILES_PROBE_USERS) {
        tried += 1;
        let path = format!(
            "/users/{}/drive",
            percent_encoding::utf8_percent_encode(user, PATH_SEGMENT)
        );
        let drive = graph.get_json::<serde_json::Value>(&path).await;
        match &drive {
            Err(e) if not_found(e) => {}
            _ => return outcome_of(&drive),
        }
    }
    Check::Unknown {
        note: if tried == 0 {
            "not checked: the tenant has no users".to_owned()
        } else {
            format!("not checked: none of the first {tried} users has a OneDrive")
        },
    }
}

/// Characters escaped in a path segment.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'@');

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ErrorBody, ServiceError};

    fn service(status: u16, code: &str) -> M365Error {
        let body = format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#);
        M365Error::Service(Box::new(ServiceError::new(
            "c",
            "GET /users".to_owned(),
            status,
            &ErrorBody::parse(body.as_bytes()),
            None,
            None,
            "Directory.Read.All",
        )))
    }

    #[test]
    fn a_403_means_the_permission_is_missing_and_other_errors_are_failures() {
        let missing: Result<(), _> = Err(service(403, "Authorization_RequestDenied"));
        assert!(matches!(outcome_of(&missing), Check::Missing { .. }));
        let af: Result<(), _> = Err(service(401, "AF10001"));
        assert!(matches!(outcome_of(&af), Check::Missing { .. }));
        let busy: Result<(), _> = Err(service(500, "generalException"));
        assert!(matches!(outcome_of(&busy), Check::Failed { .. }));
        assert!(matches!(outcome_of(&Ok::<(), M365Error>(())), Check::Granted));
    }

    #[test]
    fn write_mode_needs_files_read_write_all_in_the_token() {
        let read_only = vec!["Files.Read.All".to_owned(), "Directory.Read.All".to_owned()];
        assert!(matches!(
            roles_check(Permission::FilesWrite, Some(&read_only)),
            Check::Missing { .. }
        ));
        let write = vec!["files.readwrite.all".to_owned()];
        assert!(matches!(
            roles_check(Permission::FilesWrite, Some(&write)),
            Check::Granted
        ));
        assert!(matches!(
            roles_check(Permission::FilesWrite, None),
            Check::Missing { .. }
        ));
    }

    #[test]
    fn write_capable_roles_of_a_pipeline_token_are_named() {
        let payload = URL_SAFE_NO_PAD.encode(r#"{"roles":["Files.Read.All","sites.fullcontrol.all","Mail.Read"]}"#);
        assert_eq!(write_roles(&format!("h.{payload}.s")), ["sites.fullcontrol.all"]);
        let read = URL_SAFE_NO_PAD.encode(r#"{"roles":["Files.Read.All","Sites.Read.All"]}"#);
        assert!(write_roles(&format!("h.{read}.s")).is_empty());
    }

    #[test]
    fn the_tenant_is_read_from_the_token_tid_claim_in_lowercase() {
        let payload = URL_SAFE_NO_PAD.encode(r#"{"aud":"x","tid":"7A3C9D2E-41F5-4B6A-9C8D-2E1F0A9B8C7D"}"#);
        assert_eq!(
            token_tenant(&format!("h.{payload}.s")).as_deref(),
            Some("7a3c9d2e-41f5-4b6a-9c8d-2e1f0a9b8c7d")
        );
        assert_eq!(token_tenant("not-a-jwt"), None);
        let none = URL_SAFE_NO_PAD.encode(r#"{"aud":"x"}"#);
        assert_eq!(token_tenant(&format!("h.{none}.s")), None);
    }

    #[test]
    fn roles_are_read_from_the_token_payload() {
        let payload = URL_SAFE_NO_PAD.encode(r#"{"aud":"x","roles":["Files.Read.All","Mail.Read"]}"#);
        let token = format!("eyJhbGciOiJub25lIn0.{payload}.sig");
        assert_eq!(
            token_roles(&token),
            Some(vec!["Files.Read.All".to_owned(), "Mail.Read".to_owned()])
        );
        let none = URL_SAFE_NO_PAD.encode(r#"{"aud":"x"}"#);
        assert_eq!(token_roles(&format!("h.{none}.s")), None);
        assert_eq!(token_roles("opaque"), None);
    }

    #[test]
    fn the_report_lists_every_missing_permission_with_how_to_grant_it() {
        let report = ProbeReport {
            tenant_id: None,
            checks: vec![
                (Permission::DirectoryRead, Check::Missing { detail: "403".into() }),
                (Permission::FilesRead, Check::Granted),
                (
                    Permission::ActivityFeedRead,
                    Check::Missing {
                        detail: "AF10001".into(),
                    },
                ),
            ],
        };
        assert!(!report.passed());
        assert_eq!(
            report.missing(),
            [Permission::DirectoryRead, Permission::ActivityFeedRead]
        );
        let text = report.problems("app-1");
        assert!(text.contains("lacks 2 application permissions"), "{text}");
        assert!(
            text.contains(
                "Microsoft Graph Directory.Read.All (to list users, groups and their members): grant it in Entra admin \
                 center > App registrations > app-1 > API permissions > Add a permission > Microsoft Graph > \
                 Application permissions > Directory.Read.All, then Grant admin consent"
            ),
            "{text}"
        );
        assert!(text.contains("Office 365 Management APIs > Application permissions > ActivityFeed.Read"));
        assert!(!text.contains("Files.Read.All"), "{text}");
    }

    #[test]
    fn unknown_checks_are_notes_not_failures() {
        let report = ProbeReport {
            tenant_id: None,
            checks: vec![(
                Permission::FilesRead,
                Check::Unknown {
                    note: "no OneDrive".into(),
                },
            )],
        };
        assert!(report.passed());
        assert_eq!(report.notes().len(), 1);
    }
}
