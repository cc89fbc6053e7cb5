//! `filetrail exposure` (files shared by anonymous link or with people outside the trusted
//! domains, from the sharing state kept beside the inventory) and `filetrail sharing revoke`
//! (removes sharing through Graph: opt-in write mode, confirmed, recorded as an event).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use filetrail_core::audit::{FileEvent, FileEventType, TrustedDomains};
use filetrail_core::events::EventRecord;
use filetrail_core::exposure::{Grant, Reach, RevokeSelection, SharingState};
use filetrail_core::model::Connection;
use filetrail_core::ports::{InventoryStore, SharingStore, StateStore};
use serde::Serialize;

/// One exposed grant of one file, as the report prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExposedFile {
    pub connection: String,
    pub owner: Option<String>,
    pub name: String,
    pub path: Option<String>,
    pub drive_id: String,
    pub item_id: String,
    pub permission_id: String,
    /// `anonymous` link, or the link scope / direct grant reaching external people.
    pub reach: Reach,
    pub link: bool,
    pub roles: Vec<String>,
    /// The external people named (empty for an anonymous link).
    pub targets: Vec<String>,
    pub url: Option<String>,
    pub since: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// The exposed files of `connections`, one entry per exposing grant, oldest exposure first.
/// Reads the sparse exposure index (one Query per connection), then the paths of the exposed
/// items and their drives' owners by key.
///
/// # Errors
/// Store failures.
pub async fn report(
    state: &dyn StateStore,
    inventory: &(impl SharingStore + InventoryStore),
    connections: &[Connection],
) -> anyhow::Result<Vec<ExposedFile>> {
    let mut out = Vec::new();
    for connection in connections {
        let states = inventory.exposed(&connection.id).await?;
        let mut by_drive: BTreeMap<&str, Vec<&SharingState>> = BTreeMap::new();
        for s in &states {
            by_drive.entry(s.drive_id.as_str()).or_default().push(s);
        }
        let drive_ids: Vec<String> = by_drive.keys().map(|d| (*d).to_owned()).collect();
        let owners: HashMap<String, String> = state
            .drives(&drive_ids)
            .await?
            .into_iter()
            .map(|d| (d.drive_id, d.owner_upn))
            .collect();
        for (drive, items) in by_drive {
            let ids: Vec<String> = items.iter().map(|s| s.item_id.clone()).collect();
            let paths: HashMap<String, String> = inventory.paths(drive, &ids).await?.into_iter().collect();
            for s in items {
                let path = paths.get(&s.item_id).cloned();
                let name = path
                    .as_deref()
                    .and_then(|p| p.rsplit('/').next())
                    .filter(|n| !n.is_empty())
                    .unwrap_or(&s.item_id)
                    .to_owned();
                for g in s.external_grants() {
                    out.push(entry(connection, owners.get(drive).cloned(), &name, path.clone(), s, g));
                }
            }
        }
    }
    out.sort_by(|a, b| (a.since, &a.path, &a.permission_id).cmp(&(b.since, &b.path, &b.permission_id)));
    Ok(out)
}

fn entry(
    connection: &Connection,
    owner: Option<String>,
    name: &str,
    path: Option<String>,
    s: &SharingState,
    g: &Grant,
) -> ExposedFile {
    ExposedFile {
        connection: connection.id.clone(),
        owner,
        name: name.to_owned(),
        path,
        drive_id: s.drive_id.clone(),
        item_id: s.item_id.clone(),
        permission_id: g.id.clone(),
        reach: g.reach,
        link: g.link,
        roles: g.roles.clone(),
        targets: (g.grantees.iter())
            .filter(|p| p.external == Some(true))
            .map(filetrail_core::exposure::Grantee::label)
            .collect(),
        url: g.url.clone(),
        since: g.since,
        expires_at: g.expires_at,
    }
}

fn reach_text(e: &ExposedFile) -> String {
    match (e.reach, e.link) {
        (Reach::Anonymous, _) => "anyone with the link".to_owned(),
        (Reach::Organization, true) => "organisation link".to_owned(),
        (_, true) => "specific-people link".to_owned(),
        (_, false) => "direct".to_owned(),
    }
}

/// The report as an aligned table.
pub fn render(files: &[ExposedFile]) -> String {
    let header = ["SINCE (UTC)", "OWNER", "PATH", "SHARED", "ROLES", "WITH", "LINK"];
    let rows: Vec<[String; 7]> = files
        .iter()
        .map(|e| {
            [
                e.since.format("%Y-%m-%d %H:%M").to_string(),
                e.owner.clone().unwrap_or_default(),
                e.path.clone().unwrap_or_else(|| e.name.clone()),
                reach_text(e),
                e.roles.join(","),
                if e.targets.is_empty() {
                    "anyone".to_owned()
                } else {
                    e.targets.join(", ")
                },
                e.url.clone().unwrap_or_default(),
            ]
        })
        .collect();
    crate::table::render(header, &rows)
}

/// The CSV columns of the report.
pub const CSV_HEADER: [&str; 14] = [
    "connection",
    "owner",
    "name",
    "path",
    "shared",
    "roles",
    "targets",
    "link_url",
    "since",
    "expires_at",
    "drive_id",
    "item_id",
    "permission_id",
    "reach",
];

/// Writes the report as CSV with [`CSV_HEADER`].
///
/// # Errors
/// When `out` fails.
pub fn write_csv<W: std::io::Write>(out: W, files: &[ExposedFile]) -> anyhow::Result<()> {
    let mut w = crate::csv_out::CsvOut::new(out);
    w.write(CSV_HEADER)?;
    for e in files {
        w.write([
            e.connection.clone(),
            e.owner.clone().unwrap_or_default(),
            e.name.clone(),
            e.path.clone().unwrap_or_default(),
            reach_text(e),
            e.roles.join(";"),
            e.targets.join(";"),
            e.url.clone().unwrap_or_default(),
            e.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            e.expires_at
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default(),
            e.drive_id.clone(),
            e.item_id.clone(),
            e.permission_id.clone(),
            e.reach.as_str().to_owned(),
        ])?;
    }
    w.finish()?;
    Ok(())
}

/// Why a revocation is refused before anything is removed.
#[derive(Debug, thiserror::Error)]
pub enum RevokeRefused {
    #[error("no monitored drive {0:?}; `filetrail search --json` and `filetrail exposure --csv` show drive ids")]
    UnknownDrive(String),
    #[error(
        "connection {0:?} is read-only: revoking sharing writes to the tenant, so it needs a write-mode app of its \
         own holding Files.ReadWrite.All: `filetrail connection write-mode {0} --client-id …` (README, \"Write mode\")"
    )]
    ReadOnly(String),
    #[error("item {item:?} is not in drive {drive:?} any more (deleted or moved out)")]
    ItemGone { drive: String, item: String },
    #[error("{0}")]
    Selection(String),
    #[error("not confirmed: nothing was removed (pass --yes to skip the question)")]
    NotConfirmed,
}

/// One removal filetrail asked Graph for, and Graph's answer.
#[derive(Debug, Clone)]
pub struct RevokeAttempt<'a> {
    pub grant: &'a Grant,
    /// `204 No Content`, or the status and error codes of a refusal.
    pub answer: String,
    pub succeeded: bool,
}

/// The events filetrail records for the removals it asked Graph for: one per attempt, typed
/// like the audit operation Microsoft logs for the same removal, with the AWS principal that
/// ran the command as actor, the write-mode app in the user agent and Graph's answer as the
/// result status (`Succeeded (204 No Content)`, or `Failed (403 accessDenied)`).
pub fn revocation_events(
    connection: &Connection,
    operator: &str,
    owner: Option<&str>,
    path: Option<&str>,
    state: &SharingState,
    attempts: &[RevokeAttempt<'_>],
    at: DateTime<Utc>,
) -> anyhow::Result<Vec<EventRecord>> {
    let trusted = TrustedDomains::new(&connection.trusted_domains);
    let app = connection.write_app.as_ref().map_or("none", |a| a.client_id.as_str());
    let mut out = Vec::new();
    for attempt in attempts {
        let g = attempt.grant;
        let event_type = match (g.reach, g.link) {
            (Reach::Anonymous, _) => FileEventType::AnonymousLinkRemoved,
            (Reach::Organization, true) => FileEventType::OrganizationLinkRemoved,
            (Reach::SpecificPeople, true) => FileEventType::SpecificPeopleLinkRemoved,
            (_, false) => FileEventType::SharingRevoked,
        };
        let targets: Vec<serde_json::Value> = (g.grantees.iter())
            .map(|p| {
                serde_json::json!({
                    "name": p.label(),
                    "kind": "user",
                    "email": p.email,
                    "external": p.email.as_deref().and_then(|e| trusted.is_internal(e)).map(|inside| !inside)})
            })
            .collect();
        let file_name = path.and_then(|p| p.rsplit('/').next()).filter(|n| !n.is_empty());
        let event: FileEvent = serde_json::from_value(serde_json::json!({
            "id": format!("filetrail-revoke-{}-{}-{}", state.item_id, g.id, at.timestamp_millis()),
            "event_type": event_type,
            "low_signal": false,
            "operation": "FiletrailSharingRevoked",
            "record_type": 14,
            "item_kind": "file",
            "actor": {"id": operator, "kind": "user"},
            "user_agent": format!("filetrail sharing revoke (write-mode app {app})"),
            "result_status": format!(
                "{} ({})",
                if attempt.succeeded { "Succeeded" } else { "Failed" },
                attempt.answer
            ),
            "owner_upn": owner,
            "file_name": file_name,
            "path": path,
            "extension": file_name.and_then(|n| n.rsplit_once('.')).map(|(_, e)| e.to_lowercase()),
            "drive_id": state.drive_id,
            "item_id": state.item_id,
            "observed_at": at,
            "inserted_at": at,
            "sharing": {
                "link_scope": match g.reach {
                    Reach::Anonymous => Some("anonymous"),
                    Reach::Organization => Some("organization"),
                    Reach::SpecificPeople if g.link => Some("specific_people"),
                    Reach::SpecificPeople => None},
                "targets": targets,
                "external": g.is_external(),
                "unique_sharing_id": g.id}}))?;
        out.push(EventRecord::onedrive(&connection.id, event));
    }
    Ok(out)
}

/// Parses the revoke selection flags.
///
/// # Errors
/// When none or several are given.
pub fn selection(
    permission: Option<String>,
    all_external: bool,
    all_anonymous: bool,
) -> Result<RevokeSelection, RevokeRefused> {
    match (permission, all_external, all_anonymous) {
        (Some(id), false, false) => Ok(RevokeSelection::Permission(id)),
        (None, true, false) => Ok(RevokeSelection::AllExternal),
        (None, false, true) => Ok(RevokeSelection::AllAnonymous),
        _ => Err(RevokeRefused::Selection(
            "say what to remove: one of --permission ID, --all-external or --all-anonymous".to_owned(),
        )),
    }
}

/// What a revocation reads and writes.
pub struct RevokeStores<'a> {
    pub state: &'a dyn StateStore,
    pub inventory: &'a filetrail_aws::DynamoInventoryStore,
    pub events: &'a dyn filetrail_core::ports::EventStore,
    pub clients: &'a filetrail_runtime::ConnectionClients,
}

/// How a revocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevokeReport {
    pub removed: usize,
    pub events: usize,
    pub still_exposed: bool,
}

/// Removes the selected sharing of one file: checks the connection is in write mode, lists the
/// item's permissions live (so what is removed is what Graph has now), asks `confirm` with
/// the plan (text) and the count, deletes each permission through Graph, records one event per
/// removal as filetrail's own, and refreshes the file's sharing state.
///
/// # Errors
/// [`RevokeRefused`] before anything is removed (unknown drive, read-only connection, item
/// gone, nothing selected, not confirmed); Graph errors (a missing Files.ReadWrite.All is named
/// with its fix), with how many permissions were removed before.
pub async fn revoke(
    stores: &RevokeStores<'_>,
    operator: &str,
    drive: &str,
    item: &str,
    selection: &RevokeSelection,
    confirm: &mut dyn FnMut(&str, usize) -> anyhow::Result<bool>,
) -> anyhow::Result<RevokeReport> {
    use anyhow::Context as _;
    let record = (stores.state.drive(drive).await?).ok_or_else(|| RevokeRefused::UnknownDrive(drive.to_owned()))?;
    let connection = (stores.state.connection(&record.connection).await?).with_context(|| {
        format!(
            "drive {drive:?} belongs to connection {:?}, which is gone",
            record.connection
        )
    })?;
    if !connection.write_mode() {
        return Err(RevokeRefused::ReadOnly(connection.id.clone()).into());
    }
    // The write-mode app's own token: the pipeline's app stays read-only.
    let graph = stores.clients.write_graph(&connection).await?;
    let listed = (graph.item_permissions(drive, item).await?).ok_or_else(|| RevokeRefused::ItemGone {
        drive: drive.to_owned(),
        item: item.to_owned(),
    })?;
    let listed: Vec<_> = listed.iter().map(filetrail_m365::listed_permission).collect();
    let key = [(drive.to_owned(), item.to_owned())];
    let previous = stores.inventory.sharing(&key).await?;
    let trusted = TrustedDomains::new(&connection.trusted_domains);
    let now = Utc::now();
    let current = filetrail_core::exposure::sharing_state(
        (&connection.id, drive, item),
        &listed,
        &trusted,
        previous.first(),
        now,
    );
    let chosen = filetrail_core::exposure::select_grants(&current, selection).map_err(RevokeRefused::Selection)?;
    let path = stores
        .inventory
        .paths(drive, &[item.to_owned()])
        .await?
        .pop()
        .map(|(_, p)| p);
    let mut plan = format!(
        "{} ({} in {}):\n",
        path.as_deref().unwrap_or(item),
        record.owner_upn,
        connection.id
    );
    for g in &chosen {
        let who: Vec<String> = g
            .grantees
            .iter()
            .map(filetrail_core::exposure::Grantee::label)
            .collect();
        plan.push_str(&format!(
            "  remove {} {} [{}]{}\n",
            g.id,
            g.reach.as_str(),
            g.roles.join(","),
            if who.is_empty() {
                String::new()
            } else {
                format!(" for {}", who.join(", "))
            }
        ));
    }
    if !confirm(&plan, chosen.len())? {
        return Err(RevokeRefused::NotConfirmed.into());
    }
    let mut attempts = Vec::new();
    let mut failed = None;
    for g in &chosen {
        match graph.delete_permission(drive, item, &g.id).await {
            Ok(()) => attempts.push(RevokeAttempt {
                grant: g,
                answer: "204 No Content".to_owned(),
                succeeded: true,
            }),
            Err(e) => {
                let answer = match e.service() {
                    Some(se) => format!("{} {}", se.status, se.codes.join(" ")).trim().to_owned(),
                    None => e.to_string(),
                };
                attempts.push(RevokeAttempt {
                    grant: g,
                    answer,
                    succeeded: false,
                });
                failed = Some(anyhow::Error::new(e).context(format!(
                    "removing permission {:?} ({} removed before it)",
                    g.id,
                    attempts.len() - 1
                )));
                break;
            }
        }
    }
    let removed = attempts.iter().filter(|a| a.succeeded).count();
    // Every attempt is recorded, the refused one too.
    let events = revocation_events(
        &connection,
        operator,
        Some(&record.owner_upn),
        path.as_deref(),
        &current,
        &attempts,
        Utc::now(),
    )?;
    if !events.is_empty() {
        stores.events.insert_events(&events).await?;
    }
    if let Some(e) = failed {
        return Err(e);
    }
    let counts =
        filetrail_core::exposure::refresh_sharing(&graph, stores.inventory, &connection.id, &trusted, &key, now)
            .await?;
    Ok(RevokeReport {
        removed,
        events: events.len(),
        still_exposed: counts.exposed > 0,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_file_name_or_target_a_spreadsheet_would_run_is_written_as_text() {
        let file = ExposedFile {
            connection: "contoso".into(),
            owner: Some("megan@contoso.com".into()),
            name: "=HYPERLINK(\"https://evil.example\",\"open\").xlsx".into(),
            path: Some("/Shared/=HYPERLINK(\"https://evil.example\",\"open\").xlsx".into()),
            drive_id: "b!drive-1".into(),
            item_id: "01ITEM".into(),
            permission_id: "perm-1".into(),
            reach: Reach::SpecificPeople,
            link: false,
            roles: vec!["read".into()],
            targets: vec!["@guest@fabrikam.com".into()],
            url: None,
            since: DateTime::parse_from_rfc3339("2026-12-07T10:00:00Z").unwrap().to_utc(),
            expires_at: None,
        };
        let mut out = Vec::new();
        write_csv(&mut out, &[file]).unwrap();
        let mut csv = csv::Reader::from_reader(out.as_slice());
        let header = csv.headers().unwrap().clone();
        let row = csv.records().next().unwrap().unwrap();
        let col = |name: &str| &row[header.iter().position(|h| h == name).unwrap()];
        assert_eq!(col("name"), "'=HYPERLINK(\"https://evil.example\",\"open\").xlsx");
        assert_eq!(
            col("path"),
            "/Shared/=HYPERLINK(\"https://evil.example\",\"open\").xlsx"
        );
        assert_eq!(col("targets"), "'@guest@fabrikam.com");
        assert_eq!(col("owner"), "megan@contoso.com");
    }
}
