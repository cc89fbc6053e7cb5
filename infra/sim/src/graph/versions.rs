//! File versions: `GET …/items/{id}/versions` and `GET …/items/{id}/versions/{version-id}/content`
//! (<https://learn.microsoft.com/en-us/graph/api/driveitem-list-versions>,
//! <https://learn.microsoft.com/en-us/graph/api/driveitemversion-get-contents>).
//!
//! A version is kept per content change (a new cTag): the generated file is version 1.0, every
//! upload, modification or restore of other bytes adds the next (`2.0`, `3.0`, …); renames and
//! moves do not. The list is newest first and includes the current version, as OneDrive lists
//! it. OneDrive keeps "a minimum of 500 major versions" by default; `SimConfig::versions_kept`
//! sets how many are kept here (older ones are gone, as an admin's version limit deletes them).
//! The current version's content is refused through the versions API ("You cannot get the
//! content of the current version.", OneDrive/onedrive-api-docs#1112): it is served through the
//! item's `/content`.

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::drives::{self, identity_json, iso, resolve};
use super::{Ctx, DriveSel, GraphResponse};
use crate::changes::Entry;
use crate::server::SimState;
use crate::tenant::{DriveRef, SimDrive, SimIdentity};

/// One kept version of a file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SimVersion {
    /// `1.0`, `2.0`, … in the order the versions were made.
    pub label: String,
    pub ctag: String,
    pub size: u64,
    pub modified: DateTime<Utc>,
    pub modified_by: SimIdentity,
}

/// The versions OneDrive keeps of a file, oldest first (the last is the current one); `None`
/// when the item does not exist now, an empty list for a folder.
pub(crate) fn history(state: &SimState, d: DriveRef, drive: &SimDrive, item_id: &str) -> Option<Vec<SimVersion>> {
    let current = drives::current_item_in(state, d, drive, item_id)?;
    if current.is_folder {
        return Some(Vec::new());
    }
    let tenant = &state.tenant;
    let mut states = Vec::new();
    if let Some(ordinal) = tenant.decode_item_id(d, &current.id) {
        let tree = state.trees.get(tenant, d);
        if ordinal < tree.len() {
            states.push(tree.item(tenant, drive, ordinal));
        }
    }
    for entry in state.drives.entries(d.key(), 0, u64::MAX) {
        if let Entry::Present(item) = entry
            && item.id == current.id
        {
            states.push(*item);
        }
    }
    let mut versions: Vec<SimVersion> = Vec::new();
    for s in states {
        let Some(ctag) = s.ctag.clone() else { continue };
        if versions.last().is_some_and(|v| v.ctag == ctag) {
            continue;
        }
        versions.push(SimVersion {
            label: format!("{}.0", versions.len() + 1),
            ctag,
            size: s.size,
            modified: s.modified,
            modified_by: s.modified_by.clone(),
        });
    }
    let kept = state.versions_kept.max(1);
    if versions.len() > kept {
        versions.drain(..versions.len() - kept);
    }
    Some(versions)
}

/// `GET …/items/{id}/versions`: the kept versions, newest first.
pub(crate) fn list(ctx: &Ctx<'_>, sel: &DriveSel, item_id: &str) -> GraphResponse {
    let (d, drive) = match resolve(ctx, sel) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let Some(versions) = history(ctx.state, d, &drive, item_id) else {
        return drives::item_not_found(ctx);
    };
    let value: Vec<Value> = versions
        .iter()
        .rev()
        .map(|v| {
            json!({
                "id": v.label,
                "lastModifiedBy": {"user": identity_json(&v.modified_by)},
                "lastModifiedDateTime": iso(v.modified),
                "size": v.size,
            })
        })
        .collect();
    GraphResponse::ok(json!({
        "@odata.context": format!(
            "{}/$metadata#drives('{}')/items('{item_id}')/versions",
            ctx.graph_url(),
            drive.id
        ),
        "value": value,
    }))
}

/// `GET …/items/{id}/versions/{version-id}/content`: 302 to a download URL of that version; 404
/// for a version no longer kept; 400 for the current version.
pub(crate) fn content(ctx: &Ctx<'_>, sel: &DriveSel, item_id: &str, label: &str) -> GraphResponse {
    let (d, drive) = match resolve(ctx, sel) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let Some(versions) = history(ctx.state, d, &drive, item_id) else {
        return drives::item_not_found(ctx);
    };
    let Some(at) = versions.iter().position(|v| v.label == label) else {
        return GraphResponse::json(
            StatusCode::NOT_FOUND,
            json!({"error": {
                "code": "itemNotFound",
                "message": "The requested version was not found.",
                "innerError": ctx.inner_error(None),
            }}),
        );
    };
    if at + 1 == versions.len() {
        return ctx.bad_request("invalidRequest", "You cannot get the content of the current version.");
    }
    let Some(item) = drives::current_item_in(ctx.state, d, &drive, item_id) else {
        return drives::item_not_found(ctx);
    };
    crate::content::version_redirect(ctx, &drive, &item, label)
}
