//! The pieces of the scope benchmark that need no server: the groups CSV an admin would upload,
//! the tenant's ground truth for a scope of every group, and the Graph request counts of the
//! naive resolution and of the batched floor.

use std::collections::{BTreeSet, HashSet};

use filetrail_m365::graph::{BATCH_MAX_REQUESTS, MEMBERS_PAGE_SIZE};
use m365_sim::Tenant;

use crate::BenchError;

/// A group of the simulated directory as the scope CSV names it, with its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeGroup {
    pub id: String,
    pub display_name: String,
    /// `None` for security groups (not mail-enabled).
    pub mail: Option<String>,
    /// Users in the group, nested groups included, each once.
    pub transitive_users: u64,
}

/// Every group of the tenant, in directory order, with its transitive user count (computed
/// without listing members: O(groups)).
pub fn scope_groups(tenant: &Tenant) -> Vec<ScopeGroup> {
    tenant
        .groups()
        .map(|g| ScopeGroup {
            transitive_users: tenant.transitive_user_count(&g.id),
            id: g.id,
            display_name: g.display_name,
            mail: g.mail,
        })
        .collect()
}

/// The groups CSV an admin exports and uploads: a `Display Name,Email` header, one group a row.
/// filetrail reads the mail when a row has one (mails are unique) and the display name otherwise
/// (security groups have no mail; a display name shared by two groups selects both). Fails only
/// if the CSV writer does.
pub fn groups_csv(groups: &[ScopeGroup]) -> Result<Vec<u8>, BenchError> {
    let failed = |e: &dyn std::fmt::Display| BenchError::Csv(e.to_string());
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(["Display Name", "Email"]).map_err(|e| failed(&e))?;
    for group in groups {
        writer
            .write_record([group.display_name.as_str(), group.mail.as_deref().unwrap_or_default()])
            .map_err(|e| failed(&e))?;
    }
    writer.into_inner().map_err(|e| failed(&e))
}

/// Who a scope of every group covers, from the tenant's model (no HTTP). Materialises every
/// member id: build it after measuring discovery's memory, not before.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeTruth {
    /// Distinct users that are transitive members of at least one group.
    pub users: u64,
    /// The OneDrive ids of those users: what discovery must monitor.
    pub drives: BTreeSet<String>,
    /// Those users without a OneDrive.
    pub without_drive: u64,
}

impl ScopeTruth {
    /// The truth for a scope naming every group of `tenant`.
    pub fn of_all_groups(tenant: &Tenant) -> Self {
        let mut users: HashSet<String> = HashSet::new();
        for group in tenant.groups() {
            users.extend(tenant.transitive_user_ids(&group.id));
        }
        let mut truth = ScopeTruth {
            users: users.len() as u64,
            ..ScopeTruth::default()
        };
        for id in &users {
            match tenant.find_user(id).and_then(|u| tenant.drive_of_user(u.index)) {
                Some(drive) => {
                    truth.drives.insert(drive.id);
                }
                None => truth.without_drive += 1,
            }
        }
        truth
    }
}

/// `GET …/transitiveMembers/microsoft.graph.user` pages needed for a group of `users` transitive
/// user members at `$top=999`: at least one (an empty group still answers one empty page).
pub fn member_pages(users: u64) -> u64 {
    users.div_ceil(u64::from(MEMBERS_PAGE_SIZE)).max(1)
}

/// `$batch` envelopes for `lookups` requests, [`BATCH_MAX_REQUESTS`] (20) to an envelope.
pub fn batch_envelopes(lookups: u64) -> u64 {
    lookups.div_ceil(BATCH_MAX_REQUESTS as u64)
}

/// How many Graph requests resolving and discovering a groups scope takes, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScopeRequests {
    /// Requests that find the listed groups (`GET /groups?$filter=…`, alone or in `$batch`).
    pub group_lookups: u64,
    /// Transitive member pages (never batched: each page's link comes from the previous one).
    pub member_pages: u64,
    /// Requests that look up users' drives (`GET /users/{id}/drive`, alone or in `$batch`).
    pub drive_lookups: u64,
}

impl ScopeRequests {
    pub fn total(&self) -> u64 {
        self.group_lookups + self.member_pages + self.drive_lookups
    }

    /// The naive resolution: one `$filter` request per listed group, every group's member pages,
    /// one `GET /users/{id}/drive` per distinct member (a user in several groups looked up once).
    pub fn naive(entries: u64, member_pages: u64, distinct_users: u64) -> Self {
        Self {
            group_lookups: entries,
            member_pages,
            drive_lookups: distinct_users,
        }
    }

    /// The least any resolution can send without `$batch` on member pages: the group lookups
    /// and the drive lookups in full envelopes of 20, every member page once. Discovery sends a
    /// little more, as it looks drives up step by step and a step's last envelope is partial.
    pub fn batched_floor(entries: u64, member_pages: u64, distinct_users: u64) -> Self {
        Self {
            group_lookups: batch_envelopes(entries),
            member_pages,
            drive_lookups: batch_envelopes(distinct_users),
        }
    }
}
