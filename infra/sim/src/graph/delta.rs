//! `GET …/root/delta`: full enumeration, incremental rounds, `token=latest`, timestamp tokens,
//! and 410 resync after `invalidate_delta_tokens` (<https://learn.microsoft.com/en-us/graph/api/driveitem-delta>,
//! <https://learn.microsoft.com/en-us/onedrive/developer/rest-api/concepts/errors>).
//!
//! Tokens are opaque sealed cursors `{mode, drive, epoch, position, from, to, page size}`:
//! * **full** — the generated base items in depth-first order (root first, parents before
//!   children), then the latest state of every item in `log[0..to]`;
//! * **changes** — the latest state of every item in `log[from..to]` (a deltaLink carries
//!   `from = version` and an unresolved `to`, fixed at its first use);
//! * **since** — like full, restricted to items modified at or after a timestamp (plus their
//!   ancestors, which delta always reports), then logged changes after it.
//!
//! A token whose epoch differs from the drive's current epoch answers **410 Gone** with a
//! `Location` header holding a fresh full-enumeration nextLink.
//!
//! **Sharing.** Every item carries its `shared` facet when it is shared. A sharing change leaves
//! eTag and cTag alone and is logged as a marker (`Entry::Shared`) that ordinary rounds skip:
//! the docs only promise items "with direct changes to their content or metadata and the parent
//! hierarchy of the changed items" (scan-guidance), so a client cannot rely on plain delta to
//! learn of sharing changes. With `Prefer: deltashowremovedasdeleted, deltatraversepermissiongaps,
//! deltashowsharingchanges` (all three: the docs say the first requires the other two) **and** a
//! token holding `Sites.FullControl.All` ("in order to process permissions correctly your
//! application will need to request Sites.FullControl.All"), an incremental or timestamp round
//! re-emits the items whose sharing changed in its range, annotated
//! `"@microsoft.graph.sharedChanged":"True"`, after their unannotated ancestors (as observed in
//! msgraph-sdk-java#2548: only the item carries the annotation). Without either, the preference
//! is ignored, silently, as an unhonoured `Prefer` is.

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use std::collections::HashSet;

use super::drives::{Style, item_json, resolve};
use super::{Ctx, DriveSel, GraphResponse, Query, encode_query_value};
use crate::changes::{Entry, latest_per_item, shared_ids};
use crate::config::DELTA_PAGE_MAX;
use crate::prng::{hash4, tag, unit};
use crate::stats::bump;
use crate::tenant::{DriveRef, DriveTree, SimDrive, SimItem};

const K_REPEAT: u64 = tag(b"delta-repeat");
const TOKEN_VERSION: u8 = 1;
/// `to` of a cursor not yet bound to a log version (a deltaLink before its first use).
const UNRESOLVED: u64 = u64::MAX;

/// driveItem properties accepted in `$select` on delta.
const SELECTABLE: &[&str] = &[
    "id",
    "name",
    "eTag",
    "cTag",
    "size",
    "createdBy",
    "createdDateTime",
    "lastModifiedBy",
    "lastModifiedDateTime",
    "parentReference",
    "webUrl",
    "file",
    "folder",
    "root",
    "deleted",
    "fileSystemInfo",
    "shared",
    "sharepointIds",
];

/// The `Prefer` values that together ask delta for sharing changes (driveitem-delta.md: "The use
/// of `Prefer: deltashowsharingchanges` header requires you to use `Prefer:
/// deltashowremovedasdeleted` and `Prefer: deltatraversepermissiongaps`").
const SHARING_PREFER: [&str; 3] = [
    "deltashowremovedasdeleted",
    "deltatraversepermissiongaps",
    "deltashowsharingchanges",
];
/// The application role delta's sharing changes need (driveitem-delta.md, scan-guidance).
const SHARING_ROLE: &str = "Sites.FullControl.All";
/// The annotation on items re-emitted because their sharing changed.
const SHARED_CHANGED: &str = "@microsoft.graph.sharedChanged";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Full = 0,
    Changes = 1,
    Since = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    mode: Mode,
    drive_key: u64,
    epoch: u32,
    pos: u64,
    /// Changes: first log index; Since: Unix seconds.
    from: u64,
    /// Log version the round ends at, or [`UNRESOLVED`].
    to: u64,
    top: u32,
}

impl Cursor {
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(42);
        b.push(TOKEN_VERSION);
        b.push(self.mode as u8);
        b.extend_from_slice(&self.drive_key.to_le_bytes());
        b.extend_from_slice(&self.epoch.to_le_bytes());
        b.extend_from_slice(&self.pos.to_le_bytes());
        b.extend_from_slice(&self.from.to_le_bytes());
        b.extend_from_slice(&self.to.to_le_bytes());
        b.extend_from_slice(&self.top.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != 42 || b[0] != TOKEN_VERSION {
            return None;
        }
        let u64_at = |i: usize| b.get(i..i + 8).and_then(|s| s.try_into().ok()).map(u64::from_le_bytes);
        let u32_at = |i: usize| b.get(i..i + 4).and_then(|s| s.try_into().ok()).map(u32::from_le_bytes);
        let mode = match b[1] {
            0 => Mode::Full,
            1 => Mode::Changes,
            2 => Mode::Since,
            _ => return None,
        };
        Some(Self {
            mode,
            drive_key: u64_at(2)?,
            epoch: u32_at(10)?,
            pos: u64_at(14)?,
            from: u64_at(22)?,
            to: u64_at(30)?,
            top: u32_at(38)?,
        })
    }
}

/// One element of a delta round.
enum Slot<'a> {
    /// A generated item by ordinal.
    Base(usize),
    /// A logged change.
    Log(&'a Entry),
}

/// The whole sequence a round reports: base ordinals, then logged changes.
struct Feed {
    base: Vec<u32>,
    log: Vec<Entry>,
    /// Items re-emitted because their sharing changed (annotated `sharedChanged`).
    shared_changed: HashSet<String>,
}

impl Feed {
    fn len(&self) -> u64 {
        (self.base.len() + self.log.len()) as u64
    }

    fn get(&self, p: u64) -> Option<Slot<'_>> {
        let p = usize::try_from(p).ok()?;
        match self.base.get(p) {
            Some(o) => Some(Slot::Base(*o as usize)),
            None => self.log.get(p - self.base.len()).map(Slot::Log),
        }
    }
}

fn link(ctx: &Ctx<'_>, drive: &SimDrive, cursor: &Cursor, select: Option<&str>) -> String {
    let mut url = format!(
        "{}/drives/{}/root/delta?token={}",
        ctx.graph_url(),
        drive.id,
        ctx.seal(&cursor.encode())
    );
    if let Some(sel) = select {
        url.push_str(&format!("&$select={}", encode_query_value(sel)));
    }
    url
}

/// An item's `sharepointIds` (sharepointids.md): the ids its audit records carry.
fn sharepoint_ids(ctx: &Ctx<'_>, d: DriveRef, drive: &SimDrive, item_id: &str) -> Value {
    let seed = ctx.state.tenant.seed();
    let mut parts = drive.site_id.split(',').skip(1);
    let site_guid = parts.next().unwrap_or_default();
    let web_guid = parts.next().unwrap_or_default();
    let site_url = drive
        .web_url
        .rsplit_once('/')
        .map_or(drive.web_url.as_str(), |(s, _)| s);
    json!({
        "listId": crate::inject::list_id(seed, d),
        "listItemUniqueId": crate::inject::list_item_unique_id(seed, d, item_id),
        "siteId": site_guid,
        "siteUrl": site_url,
        "tenantId": ctx.state.tenant.tenant_id(),
        "webId": web_guid,
    })
}

fn deleted_json(drive: &SimDrive, id: &str, parent_id: Option<&str>, is_folder: bool, at: DateTime<Utc>) -> Value {
    let mut parent = Map::new();
    parent.insert("driveType".into(), json!(drive.drive_type));
    parent.insert("driveId".into(), json!(drive.id));
    if let Some(p) = parent_id {
        parent.insert("id".into(), json!(p));
    }
    let mut o = Map::new();
    o.insert("id".into(), json!(id));
    o.insert("lastModifiedDateTime".into(), json!(super::drives::iso(at)));
    o.insert("parentReference".into(), Value::Object(parent));
    // ODB omits name and cTag on delete (https://learn.microsoft.com/en-us/graph/api/driveitem-delta#remarks).
    o.insert("deleted".into(), json!({"state": "deleted"}));
    if is_folder {
        o.insert("folder".into(), json!({"childCount": 0}));
    } else {
        o.insert("file".into(), json!({}));
    }
    Value::Object(o)
}

fn apply_select(v: Value, select: Option<&[&str]>) -> Value {
    match (select, v) {
        (Some(keep), Value::Object(obj)) => Value::Object(
            obj.into_iter()
                .filter(|(k, _)| k == "id" || k == "deleted" || keep.contains(&k.as_str()))
                .collect(),
        ),
        (_, v) => v,
    }
}

/// Base ordinals for a "since" round: items modified at or after `since`, plus their ancestors
/// (and the root), in depth-first order.
fn since_base(tree: &DriveTree, since: i64) -> Vec<u32> {
    let mut include = vec![false; tree.len()];
    include[0] = true;
    for o in 1..tree.len() {
        if tree.node(o).modified >= since {
            let mut cur = o;
            while !include[cur] {
                include[cur] = true;
                cur = tree.node(cur).parent as usize;
            }
        }
    }
    tree.order().iter().copied().filter(|o| include[*o as usize]).collect()
}

/// Whether the request asks for sharing changes and its token may see them.
fn wants_sharing_changes(ctx: &Ctx<'_>) -> bool {
    let asked = SHARING_PREFER.iter().all(|p| ctx.prefer.iter().any(|v| v == p));
    let role = ctx
        .roles
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|r| r.eq_ignore_ascii_case(SHARING_ROLE));
    asked && role
}

/// An item's state at log version `to`: its latest entry before `to`, else its generated base.
/// `None` when deleted then, or unknown.
fn state_at(
    ctx: &Ctx<'_>,
    d: DriveRef,
    drive: &SimDrive,
    tree: &DriveTree,
    log: &[Entry],
    id: &str,
) -> Option<SimItem> {
    let logged = log
        .iter()
        .rev()
        .find(|e| e.id() == id && !matches!(e, Entry::Shared { .. }));
    match logged {
        Some(Entry::Present(item)) => Some((**item).clone()),
        Some(_) => None,
        None => {
            let ordinal = ctx.state.tenant.decode_item_id(d, id)?;
            (ordinal < tree.len()).then(|| tree.item(&ctx.state.tenant, drive, ordinal))
        }
    }
}

/// Appends to the feed the items whose sharing changed in the round and that it does not
/// already report, each after its ancestors (root first), in their state at version `to` (so
/// every page of the round sees the same feed). Items deleted by then are left out.
fn add_sharing_changes(ctx: &Ctx<'_>, d: DriveRef, drive: &SimDrive, tree: &DriveTree, feed: &mut Feed, to: u64) {
    let log = ctx.state.drives.entries(d.key(), 0, to);
    let mut present: HashSet<String> = feed.log.iter().map(|e| e.id().to_owned()).collect();
    let mut ids: Vec<String> = shared_ids(&log)
        .into_iter()
        .filter(|id| feed.shared_changed.contains(id))
        .collect();
    ids.retain(|id| !present.contains(id));
    for id in ids {
        let Some(item) = state_at(ctx, d, drive, tree, &log, &id) else {
            feed.shared_changed.remove(&id);
            continue;
        };
        let mut chain = Vec::new();
        let mut parent = item.parent_id.clone();
        while let Some(pid) = parent {
            if present.contains(&pid) || chain.len() > 64 {
                break;
            }
            let Some(folder) = state_at(ctx, d, drive, tree, &log, &pid) else {
                break;
            };
            parent = folder.parent_id.clone();
            chain.push(folder);
        }
        for folder in chain.into_iter().rev() {
            present.insert(folder.id.clone());
            feed.log.push(Entry::Present(Box::new(folder)));
        }
        present.insert(item.id.clone());
        feed.log.push(Entry::Present(Box::new(item)));
    }
}

fn resync(ctx: &Ctx<'_>, drive: &SimDrive, fresh: &Cursor, select: Option<&str>) -> GraphResponse {
    bump(&ctx.state.counters.delta_resync);
    GraphResponse::json(
        StatusCode::GONE,
        json!({"error": {
            "code": "resyncRequired",
            "message": "Resync required. Replace any local items with the server's version (including deletes) if you're sure that the service was up to date with your local changes when you last sync'd. Upload any local changes that the server doesn't know about.",
            "innerError": ctx.inner_error(Some("resyncChangesApplyDifferences")),
        }}),
    )
    .with_header("Location", link(ctx, drive, fresh, select))
}

/// `GET /drives/{d}/root/delta` and its aliases.
pub(crate) fn delta(
    ctx: &Ctx<'_>,
    sel: &DriveSel,
    folder: Option<&str>,
    path_token: Option<&str>,
    q: &Query,
) -> GraphResponse {
    let (d, drive) = match resolve(ctx, sel) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let tenant = &ctx.state.tenant;
    if let Some(f) = folder {
        let is_root = f.eq_ignore_ascii_case("root") || tenant.decode_item_id(d, f) == Some(0);
        if !is_root {
            return ctx.bad_request(
                "invalidRequest",
                "Delta is only supported on the root folder of OneDrive for Business and SharePoint drives.",
            );
        }
    }
    if let Some(opt) = q.unsupported(&["$top", "$select"]) {
        return ctx.bad_request(
            "invalidRequest",
            format!("The query option '{opt}' is not supported by m365-sim on delta."),
        );
    }
    let select_raw = q.get("$select");
    let select: Option<Vec<&str>> = match select_raw {
        None => None,
        Some(raw) => {
            let mut v = Vec::new();
            for name in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match SELECTABLE.iter().find(|p| p.eq_ignore_ascii_case(name)) {
                    Some(p) => v.push(*p),
                    None => {
                        return ctx.bad_request(
                            "invalidRequest",
                            format!("Could not find a property named '{name}' on type 'microsoft.graph.driveItem'."),
                        );
                    }
                }
            }
            Some(v)
        }
    };
    let explicit_top = match q.get("$top") {
        None => None,
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if n >= 1 => Some(n.min(DELTA_PAGE_MAX) as u32),
            _ => return ctx.bad_request("invalidRequest", format!("Invalid value '{v}' for $top.")),
        },
    };

    let key = d.key();
    let states = &ctx.state.drives;
    let epoch = states.epoch(key);
    let version = states.version(key);
    let default_top = ctx.state.page_size_default as u32;
    let fresh = |top: u32| Cursor {
        mode: Mode::Full,
        drive_key: key,
        epoch,
        pos: 0,
        from: 0,
        to: UNRESOLVED,
        top,
    };

    let token = path_token.or_else(|| q.get("token")).filter(|t| !t.is_empty());
    let mut cursor = match token {
        None => fresh(explicit_top.unwrap_or(default_top)),
        Some(t) if t.eq_ignore_ascii_case("latest") => {
            let c = Cursor {
                mode: Mode::Changes,
                from: version,
                ..fresh(explicit_top.unwrap_or(default_top))
            };
            return GraphResponse::ok(json!({
                "@odata.context": format!("{}/$metadata#Collection(driveItem)", ctx.graph_url()),
                "@odata.deltaLink": link(ctx, &drive, &c, select_raw),
                "value": [],
            }));
        }
        Some(t) => {
            if let Ok(ts) = DateTime::parse_from_rfc3339(t) {
                // Timestamp tokens work on ODB/SharePoint only
                // (https://learn.microsoft.com/en-us/graph/api/driveitem-delta) — which is what we
                // are.
                Cursor {
                    mode: Mode::Since,
                    from: ts.timestamp().max(0) as u64,
                    ..fresh(explicit_top.unwrap_or(default_top))
                }
            } else {
                match ctx.unseal(t).and_then(|b| Cursor::decode(&b)) {
                    Some(c) if c.drive_key == key => {
                        if c.epoch != epoch {
                            return resync(ctx, &drive, &fresh(c.top), select_raw);
                        }
                        Cursor {
                            top: explicit_top.unwrap_or(c.top),
                            ..c
                        }
                    }
                    _ => return ctx.bad_request("invalidRequest", "Provided sync token is malformed."),
                }
            }
        }
    };
    if cursor.to == UNRESOLVED {
        cursor.to = version;
    }

    let tree = (cursor.mode != Mode::Changes).then(|| ctx.state.trees.get(tenant, d));
    let mut feed = match (tree.as_deref(), cursor.mode) {
        (Some(tree), Mode::Full) => Feed {
            base: tree.order().to_vec(),
            log: latest_per_item(&states.entries(key, 0, cursor.to)),
            shared_changed: HashSet::new(),
        },
        (Some(tree), Mode::Since) => {
            let since = cursor.from as i64;
            let entries: Vec<Entry> = states
                .entries(key, 0, cursor.to)
                .into_iter()
                .filter(|e| e.at().timestamp() >= since)
                .collect();
            let log = latest_per_item(&entries);
            Feed {
                base: since_base(tree, since),
                log,
                shared_changed: shared_ids(&entries).into_iter().collect(),
            }
        }
        _ => {
            let entries = states.entries(key, cursor.from, cursor.to);
            Feed {
                base: Vec::new(),
                log: latest_per_item(&entries),
                shared_changed: shared_ids(&entries).into_iter().collect(),
            }
        }
    };
    // Sharing changes are reported only to clients that asked for them and may see them.
    let sharing_tree = tree.clone().unwrap_or_else(|| ctx.state.trees.get(tenant, d));
    if wants_sharing_changes(ctx) && !feed.shared_changed.is_empty() {
        add_sharing_changes(ctx, d, &drive, &sharing_tree, &mut feed, cursor.to);
    } else {
        feed.shared_changed.clear();
    }

    // `sharepointIds` only when selected, as Graph returns it (driveitem.md: "This property is
    // not returned by default and must be selected using the $select query parameter").
    let with_ids = select.as_ref().is_some_and(|keep| keep.contains(&"sharepointIds"));
    let with_sharing = |item: &SimItem, ordinal: Option<usize>| -> Value {
        let mut v = item_json(&drive, item, Style::Delta);
        if let (true, Some(obj)) = (with_ids && !item.is_root, v.as_object_mut()) {
            obj.insert("sharepointIds".into(), sharepoint_ids(ctx, d, &drive, &item.id));
        }
        let shared = crate::sharing::shared_with_ordinal(ctx.state, d, &drive, item, Some(&sharing_tree), ordinal);
        if let (Some(facet), Some(obj)) = (crate::sharing::shared_facet(&drive, &shared), v.as_object_mut()) {
            obj.insert("shared".into(), facet);
        }
        v
    };
    let render = |slot: Slot<'_>| -> Value {
        let (v, changed) = match slot {
            Slot::Base(o) => match &tree {
                Some(tree) => (with_sharing(&tree.item(tenant, &drive, o), Some(o)), false),
                None => (Value::Null, false),
            },
            Slot::Log(Entry::Present(item)) => (with_sharing(item, None), feed.shared_changed.contains(&item.id)),
            Slot::Log(Entry::Deleted {
                id,
                parent_id,
                is_folder,
                at,
            }) => (deleted_json(&drive, id, parent_id.as_deref(), *is_folder, *at), false),
            // Markers never reach the feed (`latest_per_item` skips them).
            Slot::Log(Entry::Shared { .. }) => (Value::Null, false),
        };
        let mut v = apply_select(v, select.as_deref());
        if changed && let Some(obj) = v.as_object_mut() {
            obj.insert(SHARED_CHANGED.into(), json!("True"));
        }
        v
    };

    let top = cursor.top.max(1) as usize;
    let repeat_rate = ctx.state.delta_repeat_rate;
    let seed = tenant.seed();
    let mut value = Vec::with_capacity(top);
    let mut p = cursor.pos;
    while value.len() < top {
        let Some(slot) = feed.get(p) else { break };
        // The same item may appear more than once
        // (https://learn.microsoft.com/en-us/graph/api/driveitem-delta#remarks): now and then
        // re-send an item already sent in this round. Never in the last slot of a page, so every
        // page advances.
        if let Slot::Base(_) = slot {
            let base_pos = p as usize;
            if repeat_rate > 0.0 && base_pos >= 2 && value.len() + 1 < top {
                let h = hash4(seed, K_REPEAT, key ^ u64::from(cursor.epoch), p);
                if unit(h) < repeat_rate {
                    let earlier = 1 + (h % (base_pos as u64 - 1)) as usize;
                    value.push(render(Slot::Base(feed.base[earlier] as usize)));
                }
            }
        }
        value.push(render(slot));
        p += 1;
    }

    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!("{}/$metadata#Collection(driveItem)", ctx.graph_url())),
    );
    if p < feed.len() {
        let next = Cursor { pos: p, ..cursor };
        body.insert("@odata.nextLink".into(), json!(link(ctx, &drive, &next, select_raw)));
    } else {
        let delta_link = Cursor {
            mode: Mode::Changes,
            pos: 0,
            from: cursor.to,
            to: UNRESOLVED,
            ..cursor
        };
        body.insert(
            "@odata.deltaLink".into(),
            json!(link(ctx, &drive, &delta_link, select_raw)),
        );
    }
    body.insert("value".into(), Value::Array(value));
    GraphResponse::ok(Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips() {
        let c = Cursor {
            mode: Mode::Since,
            drive_key: 7,
            epoch: 3,
            pos: 99,
            from: 5,
            to: UNRESOLVED,
            top: 200,
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode(&[1, 2, 3]), None);
    }
}
