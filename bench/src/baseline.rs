//! The baselines the benchmarks compare filetrail with, measured against the same simulator in
//! the same run, and the walk of a big directory used to load the simulator.

use std::collections::HashSet;

use filetrail_core::model::DeltaNext;
use filetrail_core::scope::GroupSelector;
use filetrail_m365::graph::DRIVE_SELECT;
use filetrail_m365::{GraphClient, M365Error};
use futures_util::{StreamExt as _, TryStreamExt as _};
use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use crate::BenchError;

/// Characters escaped in a user id placed in a URL path.
const PATH_SEGMENT: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'%').add(b'/').add(b'?');
/// Characters escaped in a `$filter` value: all but unreserved ones and `'` (as filetrail's
/// Graph client does).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'\'');

/// What the naive discovery saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NaiveDiscovery {
    /// `GET /users` pages read.
    pub user_pages: u64,
    /// Users listed.
    pub users: u64,
    /// Users whose `GET /users/{id}/drive` answered a drive.
    pub drives: u64,
    /// Users whose drive lookup answered 404 or 400 (no OneDrive,
    /// <https://learn.microsoft.com/en-us/graph/api/drive-get>).
    pub without_drive: u64,
}

/// Discovery without batching, as a first implementation would do it: every users page
/// (`$top=999`), then one `GET /users/{id}/drive` per user, `concurrency` at a time. It sends
/// `pages + users` Graph requests. Fails on the first error other than a user without a drive.
pub async fn naive_discovery(graph: &GraphClient, concurrency: usize) -> Result<NaiveDiscovery, BenchError> {
    let mut out = NaiveDiscovery::default();
    let mut link: Option<String> = None;
    loop {
        let page = graph.users_page(link.as_deref()).await?;
        out.user_pages += 1;
        out.users += page.users.len() as u64;
        let found: Vec<bool> = futures_util::stream::iter(page.users.iter().map(|u| has_drive(graph, &u.id)))
            .buffer_unordered(concurrency.max(1))
            .try_collect()
            .await?;
        let with_drive = found.iter().filter(|f| **f).count() as u64;
        out.drives += with_drive;
        out.without_drive += found.len() as u64 - with_drive;
        match page.next_link {
            Some(next) => link = Some(next),
            None => return Ok(out),
        }
    }
}

/// One user's drive lookup: `true` for a drive, `false` for Graph's "no OneDrive" answers.
async fn has_drive(graph: &GraphClient, user_id: &str) -> Result<bool, BenchError> {
    let path = format!(
        "/users/{}/drive?$select={DRIVE_SELECT}",
        utf8_percent_encode(user_id, PATH_SEGMENT)
    );
    match graph.get_json::<serde_json::Value>(&path).await {
        Ok(_) => Ok(true),
        Err(M365Error::Service(e)) if matches!(e.status, 400 | 404) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// What fetching and parsing delta walks saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeltaWalks {
    /// Drives walked to their delta link.
    pub drives: u64,
    /// Delta pages read.
    pub pages: u64,
    /// Live items other than roots, repeats included (delta may list an item twice).
    pub items: u64,
    /// Distinct live items other than roots: what an inventory would hold.
    pub unique_items: u64,
}

/// Walks each drive's delta from the start to its delta link with
/// [`GraphClient::delta_page`] (`concurrency` drives at a time), parsing every page and storing
/// nothing: the work indexing cannot avoid. Fails on the first error (a 410 included: the
/// benchmark runs without faults).
pub async fn fetch_and_parse(
    graph: &GraphClient,
    drive_ids: &[String],
    concurrency: usize,
) -> Result<DeltaWalks, BenchError> {
    let walks: Vec<DeltaWalks> = futures_util::stream::iter(drive_ids.iter().map(|id| walk_delta(graph, id)))
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    Ok(walks.into_iter().fold(DeltaWalks::default(), |sum, w| DeltaWalks {
        drives: sum.drives + w.drives,
        pages: sum.pages + w.pages,
        items: sum.items + w.items,
        unique_items: sum.unique_items + w.unique_items,
    }))
}

async fn walk_delta(graph: &GraphClient, drive_id: &str) -> Result<DeltaWalks, BenchError> {
    let mut walk = DeltaWalks {
        drives: 1,
        ..DeltaWalks::default()
    };
    let mut seen = HashSet::new();
    let mut link: Option<String> = None;
    loop {
        let page = graph
            .delta_page(drive_id, link.as_deref())
            .await
            .map_err(|e| BenchError::Delta {
                drive_id: drive_id.to_owned(),
                detail: e.to_string(),
            })?;
        walk.pages += 1;
        for item in page.items.iter().filter(|i| !i.is_root && !i.deleted) {
            walk.items += 1;
            seen.insert(item.id.clone());
        }
        match page.next {
            DeltaNext::NextLink(next) => link = Some(next),
            DeltaNext::DeltaLink(_) => break,
        }
    }
    walk.unique_items = seen.len() as u64;
    Ok(walk)
}

/// What listing every user saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsersWalk {
    pub pages: u64,
    /// Users listed, repeats included.
    pub users: u64,
    /// Distinct user ids.
    pub unique_users: u64,
}

/// Lists the whole directory with [`GraphClient::users_page`] (`$top=999`), following every
/// next link, and counts distinct ids. Fails on the first error.
pub async fn page_all_users(graph: &GraphClient) -> Result<UsersWalk, BenchError> {
    let mut walk = UsersWalk::default();
    let mut ids: HashSet<String> = HashSet::new();
    let mut link: Option<String> = None;
    loop {
        let page = graph.users_page(link.as_deref()).await?;
        walk.pages += 1;
        walk.users += page.users.len() as u64;
        ids.extend(page.users.into_iter().map(|u| u.id));
        match page.next_link {
            Some(next) => link = Some(next),
            None => break,
        }
    }
    walk.unique_users = ids.len() as u64;
    Ok(walk)
}

/// What the naive resolution of a groups scope saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NaiveScopeResolution {
    /// `GET /groups?$filter=…` requests: one per entry (plus next pages, when a name matches
    /// more groups than a page holds).
    pub group_lookups: u64,
    /// Distinct groups the entries named.
    pub groups: u64,
    /// `GET …/transitiveMembers/microsoft.graph.user` pages read.
    pub member_pages: u64,
    /// Users listed across all groups, a user in several groups counted in each.
    pub memberships: u64,
    /// Distinct users in the groups.
    pub users: u64,
    /// Users whose `GET /users/{id}/drive` answered a drive.
    pub drives: u64,
    /// Users whose drive lookup answered 404 or 400 (no OneDrive,
    /// <https://learn.microsoft.com/en-us/graph/api/drive-get>).
    pub without_drive: u64,
}

/// Resolves a groups scope without batching, as a first implementation would: one
/// `GET /groups?$filter=…` per entry, every group's transitive user members paged (`$top=999`,
/// with [`GraphClient::group_members_page`]), then one `GET /users/{id}/drive` per distinct
/// member; `concurrency` requests at a time. Fails on the first error, and when an entry names
/// no group (the baseline must see the whole scope).
pub async fn naive_scope_resolution(
    graph: &GraphClient,
    selectors: &[GroupSelector],
    concurrency: usize,
) -> Result<NaiveScopeResolution, BenchError> {
    let concurrency = concurrency.max(1);
    let mut out = NaiveScopeResolution::default();
    let found: Vec<(Vec<String>, u64)> = futures_util::stream::iter(selectors.iter().map(|s| find_group_ids(graph, s)))
        .buffered(concurrency)
        .try_collect()
        .await?;
    let mut group_ids = Vec::new();
    let mut seen_groups = HashSet::new();
    for (ids, requests) in found {
        out.group_lookups += requests;
        group_ids.extend(ids.into_iter().filter(|id| seen_groups.insert(id.clone())));
    }
    out.groups = group_ids.len() as u64;

    let members: Vec<(Vec<String>, u64)> =
        futures_util::stream::iter(group_ids.iter().map(|id| transitive_user_ids(graph, id)))
            .buffer_unordered(concurrency)
            .try_collect()
            .await?;
    let mut users: HashSet<String> = HashSet::new();
    for (ids, pages) in members {
        out.member_pages += pages;
        out.memberships += ids.len() as u64;
        users.extend(ids);
    }
    out.users = users.len() as u64;

    let found: Vec<bool> = futures_util::stream::iter(users.iter().map(|id| has_drive(graph, id)))
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    out.drives = found.iter().filter(|f| **f).count() as u64;
    out.without_drive = out.users - out.drives;
    Ok(out)
}

/// An OData page of ids.
#[derive(Deserialize)]
struct IdPage {
    #[serde(default)]
    value: Vec<IdOnly>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

/// The ids of the groups one entry names, and the requests it took.
async fn find_group_ids(graph: &GraphClient, selector: &GroupSelector) -> Result<(Vec<String>, u64), BenchError> {
    let (property, value) = match selector {
        GroupSelector::DisplayName(v) => ("displayName", v),
        GroupSelector::Mail(v) => ("mail", v),
    };
    let filter = format!("{property} eq '{}'", value.replace('\'', "''"));
    let mut link = format!(
        "/groups?$filter={}&$select=id",
        utf8_percent_encode(&filter, QUERY_VALUE)
    );
    let mut ids = Vec::new();
    let mut requests = 0;
    loop {
        let page: IdPage = graph.get_json(&link).await?;
        requests += 1;
        ids.extend(page.value.into_iter().map(|g| g.id));
        match page.next_link {
            Some(next) => link = next,
            None => break,
        }
    }
    if ids.is_empty() {
        return Err(BenchError::GroupNotFound(format!("{property} {value:?}")));
    }
    Ok((ids, requests))
}

/// Every transitive user member of a group, and the pages it took.
async fn transitive_user_ids(graph: &GraphClient, group_id: &str) -> Result<(Vec<String>, u64), BenchError> {
    let mut ids = Vec::new();
    let mut pages = 0;
    let mut link: Option<String> = None;
    loop {
        let page = graph.group_members_page(group_id, link.as_deref()).await?;
        pages += 1;
        ids.extend(page.users.into_iter().map(|u| u.id));
        match page.next_link {
            Some(next) => link = Some(next),
            None => return Ok((ids, pages)),
        }
    }
}
