//! The rules that turn one parsed record into an event, a skip or a quarantine.

use std::borrow::Cow;

use super::location::{self, DrivePath};
use super::operations::{self, FileEventType, LinkScope, Signal, Subject};
use super::record::{self, FieldError, Loose, RawRecord, opt_int, opt_str, req_str};
use super::sharing::{self, Permission, SharingTarget};
use super::{
    Actor, ActorKind, Destination, FILE_RECORD_TYPES, FileEvent, ItemKind, MAX_EVENT_DATA_BYTES, MAX_RECORD_ID_LEN,
    NormaliseContext, Normalised, Quarantine, QuarantineReason, Sharing, SkipReason, UnresolvedReason,
};

fn malformed(record_id: Option<&str>, (field, detail): FieldError) -> Quarantine {
    Quarantine {
        record_id: record_id.map(str::to_owned),
        reason: QuarantineReason::Malformed {
            field: field.to_owned(),
            detail,
        },
        raw: None,
    }
}

/// See [`super::normalise`]; `raw` is attached by the caller.
pub(super) fn record(rec: &RawRecord<'_>, ctx: &NormaliseContext) -> Result<Normalised, Quarantine> {
    // The Id as far as it is usable, to name the record in any quarantine below.
    let loose_id = opt_str("Id", &rec.id)
        .ok()
        .flatten()
        .filter(|id| id.len() <= MAX_RECORD_ID_LEN);
    let bad = |e: FieldError| malformed(loose_id, e);

    let workload = opt_str("Workload", &rec.workload).map_err(bad)?;
    let onedrive = match workload {
        Some(w) => w.eq_ignore_ascii_case("OneDrive"),
        None => {
            let site = opt_str("SiteUrl", &rec.site_url).ok().flatten();
            let object = opt_str("ObjectId", &rec.object_id).ok().flatten();
            site.or(object).and_then(location::personal_site_key).is_some()
        }
    };
    if !onedrive {
        return Ok(Normalised::Skip(SkipReason::NotOneDrive {
            workload: workload.map(str::to_owned),
        }));
    }

    let record_type = opt_int("RecordType", &rec.record_type)
        .map_err(bad)?
        .ok_or_else(|| bad(("RecordType", "missing".to_owned())))?;
    if !FILE_RECORD_TYPES.contains(&record_type) {
        return Ok(Normalised::Skip(SkipReason::RecordType { record_type }));
    }

    let id = req_str("Id", &rec.id).map_err(bad)?.trim();
    if id.len() > MAX_RECORD_ID_LEN {
        return Err(bad((
            "Id",
            format!(
                "{} characters, more than the {MAX_RECORD_ID_LEN} an Id can have",
                id.len()
            ),
        )));
    }
    let bad = |e: FieldError| malformed(Some(id), e);

    let operation = req_str("Operation", &rec.operation).map_err(bad)?.trim();
    let Some(mapping) = operations::lookup(operation) else {
        if let Some(why) = operations::not_recorded(operation) {
            return Ok(Normalised::Skip(SkipReason::NotRecorded {
                operation: operation.to_owned(),
                why: why.to_owned(),
            }));
        }
        return Err(Quarantine {
            record_id: Some(id.to_owned()),
            reason: QuarantineReason::UnknownOperation {
                operation: record::truncate(operation, 200).to_owned(),
            },
            raw: None,
        });
    };
    let event_type = mapping.event_type;

    let creation_time = req_str("CreationTime", &rec.creation_time).map_err(bad)?;
    let observed_at = record::parse_creation_time(creation_time).map_err(|d| bad(("CreationTime", d)))?;

    let site_url = opt_str("SiteUrl", &rec.site_url).map_err(bad)?;
    let object_id = opt_str("ObjectId", &rec.object_id).map_err(bad)?;
    let item_kind = match mapping.subject {
        Subject::File => ItemKind::File,
        Subject::Folder => ItemKind::Folder,
        Subject::Any => match item_type(&rec.item_type).map_err(bad)? {
            ItemType::File => ItemKind::File,
            ItemType::Folder => ItemKind::Folder,
            ItemType::Site => ItemKind::Drive,
            ItemType::Other(name) => {
                return Ok(Normalised::Skip(SkipReason::NotAFile { item_type: name }));
            }
            ItemType::Unstated => {
                let site = site_url.map(|s| s.trim_end_matches('/'));
                let object = object_id.map(|o| o.trim_end_matches('/'));
                if object.is_some() && object == site {
                    ItemKind::Drive
                } else {
                    ItemKind::File
                }
            }
        },
    };

    let relative_url = opt_str("SourceRelativeUrl", &rec.source_relative_url).map_err(bad)?;
    let source_name = opt_str("SourceFileName", &rec.source_file_name).map_err(bad)?;
    let source_ext = opt_str("SourceFileExtension", &rec.source_file_extension).map_err(bad)?;
    let dest_relative = opt_str("DestinationRelativeUrl", &rec.destination_relative_url).map_err(bad)?;
    let dest_name = opt_str("DestinationFileName", &rec.destination_file_name).map_err(bad)?;
    let dest_ext = opt_str("DestinationFileExtension", &rec.destination_file_extension).map_err(bad)?;
    let list_id = opt_str("ListId", &rec.list_id).map_err(bad)?;
    let list_item = opt_str("ListItemUniqueId", &rec.list_item_unique_id).map_err(bad)?;
    let user_id = opt_str("UserId", &rec.user_id).map_err(bad)?;
    let user_key = opt_str("UserKey", &rec.user_key).map_err(bad)?;
    let client_ip = opt_str("ClientIP", &rec.client_ip).map_err(bad)?;
    let user_agent = opt_str("UserAgent", &rec.user_agent).map_err(bad)?;
    let result_status = opt_str("ResultStatus", &rec.result_status).map_err(bad)?;
    let target_name = opt_str("TargetUserOrGroupName", &rec.target_name).map_err(bad)?;
    let target_type = opt_str("TargetUserOrGroupType", &rec.target_type).map_err(bad)?;
    let shared_with = opt_str("UserSharedWith", &rec.user_shared_with).map_err(bad)?;
    let sharing_type = opt_str("SharingType", &rec.sharing_type).map_err(bad)?;
    let event_data = opt_str("EventData", &rec.event_data).map_err(bad)?;
    let unique_sharing_id = opt_str("UniqueSharingId", &rec.unique_sharing_id).map_err(bad)?;
    let user_type = user_type(&rec.user_type);

    // Where the item is.
    let site = site_url
        .map(|s| s.trim_end_matches('/'))
        .or_else(|| object_id.and_then(location::personal_site_url));
    let site_key = site.or(object_id).and_then(location::personal_site_key);
    let known = site_key.as_deref().and_then(|k| ctx.drives.get(k));
    let site_relative = location::site_relative_url(site, object_id, relative_url, source_name);
    let library: Option<Cow<'_, str>> = match known {
        Some(drive) => location::library_of(&drive.web_url).map(Cow::Owned),
        None => site_relative
            .as_deref()
            .map(location::first_segment)
            .filter(|s| !s.is_empty())
            .map(|s| Cow::Owned(s.to_owned())),
    };

    let (file_name, path, mut unresolved) = if item_kind == ItemKind::Drive {
        (None, None, known.is_none().then_some(UnresolvedReason::DriveNotKnown))
    } else {
        let name = source_name
            .or_else(|| site_relative.as_deref().and_then(location::last_segment))
            .or_else(|| object_id.and_then(location::last_segment))
            .ok_or_else(|| {
                bad((
                    "SourceFileName",
                    "missing, and no ObjectId or SourceRelativeUrl to name the item".to_owned(),
                ))
            })?;
        let (path, unresolved) = match (site_relative.as_deref(), library.as_deref()) {
            (Some(rel), Some(lib)) => match location::path_in_library(rel, lib) {
                DrivePath::Inside(p) => (Some(p), None),
                DrivePath::Outside => (None, Some(UnresolvedReason::OutsideDrive)),
            },
            _ => (None, Some(UnresolvedReason::NoLocation)),
        };
        if path.as_deref().is_some_and(location::is_library_page) {
            return Ok(Normalised::Skip(SkipReason::LibraryPage));
        }
        (Some(name.to_owned()), path, unresolved)
    };
    if unresolved.is_none() && item_kind != ItemKind::Drive {
        unresolved = Some(if known.is_some() {
            UnresolvedReason::ItemNotLookedUp
        } else {
            UnresolvedReason::DriveNotKnown
        });
    }

    let extension = (item_kind == ItemKind::File)
        .then(|| location::extension(source_ext, file_name.as_deref()))
        .flatten();

    let destination = (dest_relative.is_some() || dest_name.is_some()).then(|| {
        let relative = location::site_relative_url(None, None, dest_relative, dest_name);
        let path = match (relative.as_deref(), library.as_deref()) {
            (Some(rel), Some(lib)) => match location::path_in_library(rel, lib) {
                DrivePath::Inside(p) => Some(p),
                DrivePath::Outside => None,
            },
            _ => None,
        };
        let name = dest_name.or_else(|| relative.as_deref().and_then(location::last_segment));
        Destination {
            file_name: name.map(str::to_owned),
            path,
            extension: (item_kind == ItemKind::File)
                .then(|| location::extension(dest_ext, name))
                .flatten(),
            relative_url: relative.as_deref().map(str::to_owned),
        }
    });

    let actor = actor(user_id, user_key, user_type, event_type, ctx).map_err(bad)?;
    let owner_upn = match (known, site_key.as_deref(), actor.upn.as_deref()) {
        (Some(drive), _, _) => Some(drive.owner_upn.clone()),
        (None, Some(key), Some(upn)) if location::upn_matches_site_key(upn, key) => Some(upn.to_owned()),
        _ => None,
    };

    let sharing = event_type.is_sharing().then(|| {
        sharing_details(
            event_type,
            &actor,
            SharingFields {
                target_name,
                target_type,
                shared_with,
                sharing_type,
                event_data,
                unique_sharing_id,
            },
            ctx,
        )
    });

    let automated = matches!(actor.kind, ActorKind::Application | ActorKind::System);
    let low_signal = mapping.signal == Signal::Low || (automated && event_type.is_read());

    Ok(Normalised::Event(Box::new(FileEvent {
        id: id.to_owned(),
        event_type,
        low_signal,
        operation: mapping.operation.to_owned(),
        record_type,
        item_kind,
        actor,
        owner_upn,
        site_key,
        site_url: site.map(str::to_owned),
        object_url: object_id.map(str::to_owned),
        file_name,
        path,
        extension,
        destination,
        list_id: list_id.map(str::to_owned),
        list_item_unique_id: list_item.map(str::to_owned),
        drive_id: known.map(|d| d.drive_id.clone()),
        item_id: None,
        unresolved,
        observed_at,
        inserted_at: ctx.inserted_at,
        client_ip: client_ip.and_then(location::client_ip),
        user_agent: user_agent.map(str::to_owned),
        result_status: result_status.map(str::to_owned),
        sharing,
    })))
}

/// `ItemType` as the schema (an integer enum, "SharePoint Base schema" in
/// <https://learn.microsoft.com/en-us/office/office-365-management-api/office-365-management-activity-api-schema>)
/// or real records (a string, as observed) write it.
enum ItemType {
    File,
    Folder,
    /// A web, site or document library: on a OneDrive, the drive as a whole.
    Site,
    Other(String),
    Unstated,
}

fn item_type(value: &Option<Loose<'_>>) -> Result<ItemType, FieldError> {
    Ok(match value {
        None => ItemType::Unstated,
        Some(Loose::Int(1)) => ItemType::File,
        Some(Loose::Int(5)) => ItemType::Folder,
        Some(Loose::Int(6 | 7 | 9)) => ItemType::Site,
        Some(Loose::Int(n)) => ItemType::Other(n.to_string()),
        Some(Loose::Str(s)) => {
            let s = s.trim();
            let is = |name: &str| s.eq_ignore_ascii_case(name);
            if s.is_empty() {
                ItemType::Unstated
            } else if is("File") || s == "1" {
                ItemType::File
            } else if is("Folder") || s == "5" {
                ItemType::Folder
            } else if is("Web") || is("Site") || is("DocumentLibrary") || matches!(s, "6" | "7" | "9") {
                ItemType::Site
            } else {
                ItemType::Other(record::truncate(s, 64).to_owned())
            }
        }
        Some(other) => {
            return Err((
                "ItemType",
                format!("expected a string or an integer, found {}", other.kind()),
            ));
        }
    })
}

/// `UserType` as its number; the schema's member names are read too, anything else is `None`
/// (the field is informative and never worth quarantining a record for).
fn user_type(value: &Option<Loose<'_>>) -> Option<i64> {
    const NAMES: [&str; 11] = [
        "Regular",
        "Reserved",
        "Admin",
        "DcAdmin",
        "System",
        "Application",
        "ServicePrincipal",
        "CustomPolicy",
        "SystemPolicy",
        "PartnerTechnician",
        "Guest",
    ];
    match value {
        Some(Loose::Int(n)) => Some(*n),
        Some(Loose::Str(s)) => s.trim().parse().ok().or_else(|| {
            NAMES
                .iter()
                .position(|n| n.eq_ignore_ascii_case(s.trim()))
                .and_then(|i| i64::try_from(i).ok())
        }),
        _ => None,
    }
}

fn actor(
    user_id: Option<&str>,
    user_key: Option<&str>,
    user_type: Option<i64>,
    event_type: FileEventType,
    ctx: &NormaliseContext,
) -> Result<Actor, FieldError> {
    let anonymous_use = event_type == FileEventType::AnonymousLinkUsed;
    let id = match user_id {
        Some(id) => id.trim(),
        None if anonymous_use => "",
        None => return Err(("UserId", "missing or empty".to_owned())),
    };
    let is_address = id.contains('@') && !id.eq_ignore_ascii_case("app@sharepoint");
    let id_starts = |prefix: &str| location::starts_with_ignore_ascii_case(id, prefix);
    let kind = if id.eq_ignore_ascii_case("app@sharepoint") {
        ActorKind::Application
    } else if sharing::is_guest_upn(id) || user_type == Some(10) {
        ActorKind::Guest
    } else if anonymous_use && (!is_address || id_starts("urn:spo:anon")) {
        ActorKind::Anonymous
    } else if id_starts("SHAREPOINT\\")
        || id_starts("NT AUTHORITY\\")
        || id_starts("S-1-5-")
        || matches!(user_type, Some(4 | 8))
    {
        ActorKind::System
    } else if matches!(user_type, Some(5 | 6)) {
        ActorKind::Application
    } else {
        ActorKind::User
    };
    let upn = is_address.then(|| id.to_lowercase());
    let email = match kind {
        ActorKind::Guest => sharing::guest_email(id).or_else(|| upn.clone()),
        _ => upn.clone(),
    };
    let external = match kind {
        ActorKind::Guest | ActorKind::Anonymous => Some(true),
        ActorKind::Application | ActorKind::System => Some(false),
        ActorKind::User => upn
            .as_deref()
            .and_then(|u| ctx.trusted_domains.is_internal(u))
            .map(|i| !i),
    };
    Ok(Actor {
        id: id.to_owned(),
        upn,
        email,
        kind,
        user_type,
        user_key: user_key.map(str::to_owned),
        external,
    })
}

struct SharingFields<'r> {
    target_name: Option<&'r str>,
    target_type: Option<&'r str>,
    shared_with: Option<&'r str>,
    sharing_type: Option<&'r str>,
    event_data: Option<&'r str>,
    unique_sharing_id: Option<&'r str>,
}

fn sharing_details(event_type: FileEventType, actor: &Actor, f: SharingFields<'_>, ctx: &NormaliseContext) -> Sharing {
    let trusted = &ctx.trusted_domains;
    let mut targets: Vec<SharingTarget> = Vec::new();
    if let Some(name) = f.target_name {
        targets.push(sharing::target(name, f.target_type, trusted));
    }
    if let Some(name) = f.shared_with
        && !targets.iter().any(|t| t.name.eq_ignore_ascii_case(name.trim()))
    {
        targets.push(sharing::target(name, None, trusted));
    }

    let link = f.target_name.and_then(sharing::link_group);
    let link_scope = event_type.link_scope().or(link.and_then(|(scope, _)| scope));

    let data_type = f.event_data.and_then(|d| sharing::event_data_value(d, "Type"));
    let data_granted = f
        .event_data
        .and_then(|d| sharing::event_data_value(d, "Permissions granted"));
    let detail = data_type.or(data_granted).or(f.sharing_type).filter(|w| !w.is_empty());
    let permission = detail
        .and_then(Permission::parse)
        .or(link.and_then(|(_, permission)| permission));

    let reaches_outside = link_scope == Some(LinkScope::Anonymous)
        || actor.kind == ActorKind::Anonymous
        || targets.iter().any(|t| t.external == Some(true));
    let stays_inside = link_scope == Some(LinkScope::Organization)
        || (!targets.is_empty() && targets.iter().all(|t| t.external == Some(false)));
    let external = if reaches_outside {
        Some(true)
    } else if stays_inside {
        Some(false)
    } else {
        None
    };

    Sharing {
        link_scope,
        permission,
        permission_detail: detail.map(|d| record::truncate(d, 128).to_owned()),
        targets,
        external,
        unique_sharing_id: f.unique_sharing_id.map(str::to_owned),
        event_data: f
            .event_data
            .map(|d| record::truncate(d, MAX_EVENT_DATA_BYTES).to_owned()),
    }
}
