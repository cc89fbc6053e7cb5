//! `GET …/items/{id}/permissions`, `GET …/permissions/{perm-id}` and
//! `DELETE …/permissions/{perm-id}` (<https://learn.microsoft.com/en-us/graph/api/driveitem-list-permissions>,
//! <https://learn.microsoft.com/en-us/graph/api/permission-delete>; permission model in `crate::sharing`).
//!
//! * The list is `{"@odata.context", "value": [...]}`, the owner's permission first, never with
//!   `inheritedFrom` (ODB does not return it). Unknown or deleted items answer 404
//!   `itemNotFound`, like item reads.
//! * `DELETE` answers **204 No Content** and removes the permission: the item's `shared` facet
//!   follows, its eTag and cTag do not change, and delta rounds that ask for sharing changes
//!   report the item. It needs `Files.ReadWrite.All` or `Sites.ReadWrite.All` (or
//!   `Sites.FullControl.All`) in the token's roles, else 403 `accessDenied`
//!   (permission-delete.md); an unknown permission id answers 404 `itemNotFound`. Deleting the
//!   **owner's** permission answers 204 and removes nothing: what Graph is reported to do
//!   ("Owners role permission can't be removed in sharepoint and is silently failing",
//!   microsoftgraph/microsoft-graph-docs#9600; msgraph-sdk-powershell#2554), so a client must
//!   list again to know what a deletion achieved. `if-match` is not simulated.
//!
//! Every request counts as [`crate::stats::Kind::Permissions`] (5 RU upstream,
//! <https://learn.microsoft.com/sharepoint/dev/general-development/how-to-avoid-getting-throttled-or-blocked-in-sharepoint-online#resource-units>).

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::drives::{current_item, item_not_found, resolve};
use super::{Ctx, DriveSel, GraphResponse};
use crate::sharing;
use crate::stats::bump;

/// Roles any one of which lets an app delete a permission (permission-delete.md: application
/// `Files.ReadWrite.All`, higher `Sites.ReadWrite.All`; `Sites.FullControl.All` includes both).
const DELETE_ROLES: &[&str] = &["Files.ReadWrite.All", "Sites.ReadWrite.All", "Sites.FullControl.All"];

fn permission_not_found(ctx: &Ctx<'_>) -> GraphResponse {
    ctx.error(
        StatusCode::NOT_FOUND,
        "itemNotFound",
        "The resource could not be found.",
    )
}

/// `GET …/items/{id}/permissions`.
pub(crate) fn list(ctx: &Ctx<'_>, sel: &DriveSel, item_id: &str) -> GraphResponse {
    let (d, drive) = match resolve(ctx, sel) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let Some(item) = current_item(ctx, d, &drive, item_id) else {
        return item_not_found(ctx);
    };
    let seed = ctx.state.tenant.seed();
    let value: Vec<Value> = sharing::permissions(ctx.state, d, &drive, &item)
        .iter()
        .map(|p| sharing::permission_json(seed, p))
        .collect();
    GraphResponse::ok(json!({
        "@odata.context": format!(
            "{}/$metadata#drives('{}')/items('{}')/permissions",
            ctx.graph_url(),
            drive.id,
            item.id
        ),
        "value": value,
    }))
}

/// `GET …/items/{id}/permissions/{perm-id}`.
pub(crate) fn get(ctx: &Ctx<'_>, sel: &DriveSel, item_id: &str, permission_id: &str) -> GraphResponse {
    let (d, drive) = match resolve(ctx, sel) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let Some(item) = current_item(ctx, d, &drive, item_id) else {
        return item_not_found(ctx);
    };
    let seed = ctx.state.tenant.seed();
    match sharing::permissions(ctx.state, d, &drive, &item)
        .iter()
        .find(|p| p.id == permission_id)
    {
        None => permission_not_found(ctx),
        Some(p) => {
            let mut body = sharing::permission_json(seed, p);
            if let Some(obj) = body.as_object_mut() {
                obj.insert(
                    "@odata.context".into(),
                    json!(format!(
                        "{}/$metadata#drives('{}')/items('{}')/permissions/$entity",
                        ctx.graph_url(),
                        drive.id,
                        item.id
                    )),
                );
            }
            GraphResponse::ok(body)
        }
    }
}

/// `DELETE …/items/{id}/permissions/{perm-id}`.
pub(crate) fn delete(ctx: &Ctx<'_>, sel: &DriveSel, item_id: &str, permission_id: &str) -> GraphResponse {
    let held = ctx.roles.as_deref().unwrap_or_default();
    if !DELETE_ROLES
        .iter()
        .any(|r| held.iter().any(|h| h.eq_ignore_ascii_case(r)))
    {
        return ctx.error(
            StatusCode::FORBIDDEN,
            "accessDenied",
            "Access denied. You do not have permission to perform this action or access this resource.",
        );
    }
    let (d, drive) = match resolve(ctx, sel) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let Some(item) = current_item(ctx, d, &drive, item_id) else {
        return item_not_found(ctx);
    };
    let all = sharing::permissions(ctx.state, d, &drive, &item);
    let Some(target) = all.iter().find(|p| p.id == permission_id) else {
        return permission_not_found(ctx);
    };
    if !target.is_owner() {
        let at = chrono::Utc::now();
        let removed = sharing::update(ctx.state, d, &drive, &item, at, |perms| {
            perms.retain(|p| p.id != permission_id);
        });
        if removed {
            bump(&ctx.state.counters.permissions_deleted);
        }
    }
    GraphResponse {
        status: StatusCode::NO_CONTENT,
        headers: Vec::new(),
        body: None,
    }
}
