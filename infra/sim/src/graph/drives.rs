//! Drives, sites and single driveItems.

use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use super::{Ctx, DriveSel, GraphResponse, users};
use std::collections::HashSet;

use crate::changes::{Entry, latest_per_item};
use crate::server::SimState;
use crate::tenant::{DRIVE_QUOTA_TOTAL, DriveRef, NoDriveReason, SimDrive, SimIdentity, SimItem};

/// Graph's timestamp format (UTC, seconds, `Z`).
pub(crate) fn iso(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub(crate) fn identity_json(who: &SimIdentity) -> Value {
    let mut user = Map::new();
    if let Some(email) = &who.email {
        user.insert("email".into(), json!(email));
    }
    user.insert("id".into(), json!(who.id));
    user.insert("displayName".into(), json!(who.display_name));
    Value::Object(user)
}

/// The errors Graph gives for a user whose OneDrive was never provisioned
/// (<https://learn.microsoft.com/en-us/graph/api/drive-get>).
fn no_drive(ctx: &Ctx<'_>, reason: Option<NoDriveReason>) -> GraphResponse {
    match reason.unwrap_or(NoDriveReason::MysiteNotFound) {
        NoDriveReason::MysiteNotFound => {
            ctx.error(StatusCode::NOT_FOUND, "ResourceNotFound", "User's mysite not found.")
        }
        NoDriveReason::FileNotFound => ctx.error(StatusCode::NOT_FOUND, "UnknownError", "404 FILE NOT FOUND"),
        NoDriveReason::MysiteUrlUnavailable => ctx.bad_request("BadRequest", "Unable to retrieve user's mysite URL."),
    }
}

pub(crate) fn item_not_found(ctx: &Ctx<'_>) -> GraphResponse {
    ctx.error(
        StatusCode::NOT_FOUND,
        "itemNotFound",
        "The resource could not be found.",
    )
}

/// Resolves how a request addresses a drive, or the error Graph answers with.
pub(crate) fn resolve(ctx: &Ctx<'_>, sel: &DriveSel) -> Result<(DriveRef, SimDrive), GraphResponse> {
    let tenant = &ctx.state.tenant;
    let found = match sel {
        DriveSel::User(u) => {
            let user = users::lookup(ctx, u)?;
            if !user.has_drive {
                return Err(no_drive(ctx, user.no_drive_reason));
            }
            Some(DriveRef::User(user.index))
        }
        DriveSel::Drive(id) => {
            let well_formed = id
                .strip_prefix("b!")
                .and_then(|raw| URL_SAFE_NO_PAD.decode(raw).ok())
                .is_some_and(|b| b.len() == 48);
            if !well_formed {
                return Err(ctx.bad_request("invalidRequest", "Invalid request"));
            }
            tenant.decode_drive_id(id)
        }
        DriveSel::Site(site) => match tenant.decode_site_id(site) {
            Some(d) => Some(d),
            None => {
                return Err(ctx.error(
                    StatusCode::NOT_FOUND,
                    "itemNotFound",
                    "Requested site could not be found",
                ));
            }
        },
    };
    found
        .and_then(|d| tenant.drive(d).map(|sd| (d, sd)))
        .ok_or_else(|| item_not_found(ctx))
}

/// A drive as Graph renders it (the example of <https://learn.microsoft.com/en-us/graph/api/drive-get>,
/// extended with the fields a real OneDrive for Business returns).
fn drive_json(ctx: &Ctx<'_>, d: DriveRef, drive: &SimDrive) -> Value {
    let tree = ctx.state.trees.get(&ctx.state.tenant, d);
    let used = tree.node(0).size;
    let deleted = used / 50;
    let owner_key = if drive.owner_is_group { "group" } else { "user" };
    json!({
        "createdDateTime": iso(drive.created),
        "description": drive.description,
        "id": drive.id,
        "lastModifiedDateTime": iso(drive.modified),
        "name": drive.name,
        "webUrl": drive.web_url,
        "driveType": drive.drive_type,
        "createdBy": {"user": {"displayName": "System Account"}},
        "lastModifiedBy": {"user": identity_json(&drive.owner)},
        "owner": {owner_key: identity_json(&drive.owner)},
        "quota": {
            "deleted": deleted,
            "remaining": DRIVE_QUOTA_TOTAL.saturating_sub(used + deleted),
            "state": "normal",
            "total": DRIVE_QUOTA_TOTAL,
            "used": used,
        },
    })
}

/// `GET /users/{id}/drive`, `/drives/{id}`, `/sites/{id}/drive`.
pub(crate) fn drive(ctx: &Ctx<'_>, sel: &DriveSel) -> GraphResponse {
    match resolve(ctx, sel) {
        Err(e) => e,
        Ok((d, drive)) => {
            let mut body = drive_json(ctx, d, &drive);
            if let Some(obj) = body.as_object_mut() {
                obj.insert(
                    "@odata.context".into(),
                    json!(format!("{}/$metadata#drives/$entity", ctx.graph_url())),
                );
            }
            GraphResponse::ok(body)
        }
    }
}

/// `GET /sites/{site-id}`.
pub(crate) fn site(ctx: &Ctx<'_>, site_id: &str) -> GraphResponse {
    let sel = DriveSel::Site(site_id.to_owned());
    match resolve(ctx, &sel) {
        Err(e) => e,
        Ok((d, drive)) => {
            let tenant = &ctx.state.tenant;
            let (display, name, web) = match d {
                DriveRef::Site(j) => {
                    let (display, url_name) = tenant.team_site(j);
                    let web = format!("{}/sites/{url_name}", tenant.sharepoint_url());
                    (display, url_name, web)
                }
                DriveRef::User(_) => {
                    let web = drive.web_url.trim_end_matches("/Documents").to_owned();
                    let name = web.rsplit('/').next().unwrap_or_default().to_owned();
                    (drive.owner.display_name.clone(), name, web)
                }
            };
            let host = drive.site_id.split(',').next().unwrap_or_default().to_owned();
            GraphResponse::ok(json!({
                "@odata.context": format!("{}/$metadata#sites/$entity", ctx.graph_url()),
                "createdDateTime": iso(drive.created),
                "id": drive.site_id,
                "lastModifiedDateTime": iso(drive.modified),
                "name": name,
                "webUrl": web,
                "displayName": display,
                "root": {},
                "siteCollection": {"hostname": host},
            }))
        }
    }
}

/// `GET /sites/{site-id}/drives`: the site's one document library.
pub(crate) fn site_drives(ctx: &Ctx<'_>, site_id: &str) -> GraphResponse {
    match resolve(ctx, &DriveSel::Site(site_id.to_owned())) {
        Err(e) => e,
        Ok((d, drive)) => GraphResponse::ok(json!({
            "@odata.context": format!("{}/$metadata#drives", ctx.graph_url()),
            "value": [drive_json(ctx, d, &drive)],
        })),
    }
}

/// How an item is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// `GET …/items/{id}`: `parentReference.path` and `cTag` included.
    Get,
    /// Delta (ODB): no `parentReference.path`, no `cTag`
    /// (<https://learn.microsoft.com/en-us/graph/api/driveitem-delta#remarks>).
    Delta,
}

/// A driveItem as Graph renders it.
pub(crate) fn item_json(drive: &SimDrive, item: &SimItem, style: Style) -> Value {
    let mut o = Map::new();
    o.insert("createdBy".into(), json!({"user": identity_json(&item.created_by)}));
    o.insert("createdDateTime".into(), json!(iso(item.created)));
    o.insert("eTag".into(), json!(item.etag));
    o.insert("id".into(), json!(item.id));
    o.insert(
        "lastModifiedBy".into(),
        json!({"user": identity_json(&item.modified_by)}),
    );
    o.insert("lastModifiedDateTime".into(), json!(iso(item.modified)));
    o.insert("name".into(), json!(item.name));
    let mut parent = Map::new();
    parent.insert("driveType".into(), json!(drive.drive_type));
    parent.insert("driveId".into(), json!(drive.id));
    if let Some(pid) = &item.parent_id {
        parent.insert("id".into(), json!(pid));
        if style == Style::Get {
            let parent_path = item.path.rsplit_once('/').map_or("", |(p, _)| p);
            parent.insert("path".into(), json!(format!("/drives/{}/root:{parent_path}", drive.id)));
            parent.insert("siteId".into(), json!(drive.site_id));
        }
    }
    o.insert("parentReference".into(), Value::Object(parent));
    o.insert("webUrl".into(), json!(item.web_url));
    if style == Style::Get {
        if let Some(ctag) = &item.ctag {
            o.insert("cTag".into(), json!(ctag));
        }
    }
    o.insert(
        "fileSystemInfo".into(),
        json!({"createdDateTime": iso(item.created), "lastModifiedDateTime": iso(item.modified)}),
    );
    if item.is_folder {
        o.insert("folder".into(), json!({"childCount": item.child_count}));
    } else {
        let mut file = Map::new();
        if let Some(mime) = &item.mime_type {
            file.insert("mimeType".into(), json!(mime));
        }
        if let Some(h) = &item.quick_xor_hash {
            file.insert("hashes".into(), json!({"quickXorHash": h}));
        }
        o.insert("file".into(), Value::Object(file));
    }
    if item.is_root {
        o.insert("root".into(), json!({}));
    }
    o.insert("size".into(), json!(item.size));
    Value::Object(o)
}

/// The current state of an item: the latest logged change if any, else the generated base.
/// `None` if it does not exist or was deleted.
pub(crate) fn current_item(ctx: &Ctx<'_>, d: DriveRef, drive: &SimDrive, item_id: &str) -> Option<SimItem> {
    current_item_in(ctx.state, d, drive, item_id)
}

/// [`current_item`] outside a request.
pub(crate) fn current_item_in(state: &SimState, d: DriveRef, drive: &SimDrive, item_id: &str) -> Option<SimItem> {
    let tenant = &state.tenant;
    let ordinal = if item_id.eq_ignore_ascii_case("root") {
        0
    } else {
        tenant.decode_item_id(d, item_id)?
    };
    let id = tenant.item_id(d, ordinal);
    match state.drives.latest(d.key(), &id) {
        Some(Entry::Present(item)) => Some(*item),
        Some(Entry::Deleted { .. }) => None,
        Some(Entry::Shared { .. }) | None => {
            let tree = state.trees.get(tenant, d);
            (ordinal < tree.len()).then(|| tree.item(tenant, drive, ordinal))
        }
    }
}

/// The current item at a path from the drive root (`/Reports/q3.xlsx`, compared ignoring
/// case as OneDrive does): the latest logged state of an item now at that path, else a
/// generated item at that path that no change has touched. `None` if nothing is there.
pub(crate) fn item_at_path(state: &SimState, d: DriveRef, drive: &SimDrive, path: &str) -> Option<SimItem> {
    let wanted = path.trim_end_matches('/');
    if wanted.is_empty() {
        return current_item_in(state, d, drive, "root");
    }
    // The latest entry of each logged item decides where it is now.
    let latest = latest_per_item(&state.drives.entries(d.key(), 0, u64::MAX));
    let logged_here = latest.iter().find_map(|e| match e {
        Entry::Present(item) if item.path.eq_ignore_ascii_case(wanted) => Some((**item).clone()),
        _ => None,
    });
    if logged_here.is_some() {
        return logged_here;
    }
    let logged: HashSet<&str> = latest.iter().map(Entry::id).collect();
    let tree = state.trees.get(&state.tenant, d);
    (1..tree.len()).find_map(|ordinal| {
        if !tree.path(ordinal).eq_ignore_ascii_case(wanted) {
            return None;
        }
        let id = state.tenant.item_id(d, ordinal);
        (!logged.contains(id.as_str())).then(|| tree.item(&state.tenant, drive, ordinal))
    })
}

/// `GET …/root:/{path}` (with or without the closing `:`): the item at that path.
pub(crate) fn item_by_path(ctx: &Ctx<'_>, sel: &DriveSel, path: &str) -> GraphResponse {
    let (d, drive) = match resolve(ctx, sel) {
        Ok(v) => v,
        Err(e) => return e,
    };
    match item_at_path(ctx.state, d, &drive, path) {
        None => item_not_found(ctx),
        Some(item) => item_response(ctx, d, &drive, &item),
    }
}

/// `GET …/root`, `…/items/root`, `…/items/{id}`.
pub(crate) fn item(ctx: &Ctx<'_>, sel: &DriveSel, item_id: &str) -> GraphResponse {
    let (d, drive) = match resolve(ctx, sel) {
        Ok(v) => v,
        Err(e) => return e,
    };
    match current_item(ctx, d, &drive, item_id) {
        None => item_not_found(ctx),
        Some(item) => item_response(ctx, d, &drive, &item),
    }
}

/// A driveItem as `GET` answers it, with its download URL when it is a file.
fn item_response(ctx: &Ctx<'_>, d: DriveRef, drive: &SimDrive, item: &SimItem) -> GraphResponse {
    let mut body = item_json(drive, item, Style::Get);
    let shared = crate::sharing::shared_with(ctx.state, d, drive, item, None);
    if let Some(obj) = body.as_object_mut() {
        if let Some(facet) = crate::sharing::shared_facet(drive, &shared) {
            obj.insert("shared".into(), facet);
        }
        obj.insert(
            "@odata.context".into(),
            json!(format!(
                "{}/$metadata#drives('{}')/items/$entity",
                ctx.graph_url(),
                drive.id
            )),
        );
        if !item.is_folder {
            // Pre-authenticated, short-lived (https://learn.microsoft.com/en-us/graph/api/resources/driveitem);
            // never in delta.
            obj.insert(
                "@microsoft.graph.downloadUrl".into(),
                json!(crate::content::download_url(ctx.state, drive, item)),
            );
        }
    }
    GraphResponse::ok(body)
}
