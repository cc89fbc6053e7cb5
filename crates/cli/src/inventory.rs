//! `filetrail inventory`: what filetrail knows about the files of a connection's drives.

use filetrail_aws::inventory::DynamoInventoryStore;
use filetrail_core::model::{DriveState, InventoryRow};
use filetrail_core::ports::StateStore;

/// Up to `limit` rows: of `drive` when given, else from the connection's indexed drives, a few
/// rows per drive so the sample spans drives.
pub async fn sample(
    state: &dyn StateStore,
    inventory: &DynamoInventoryStore,
    connection: &str,
    drive: Option<&str>,
    limit: usize,
) -> anyhow::Result<Vec<(String, InventoryRow)>> {
    let drives: Vec<String> = match drive {
        Some(d) => vec![d.to_owned()],
        None => state.drive_ids_in_state(connection, DriveState::Indexed, None).await?.0,
    };
    let per_drive = if drive.is_some() {
        limit
    } else {
        limit.div_ceil(drives.len().clamp(1, 4))
    };
    let mut out = Vec::new();
    for id in drives {
        if out.len() >= limit {
            break;
        }
        let owner = state.drive(&id).await?.map(|d| d.owner_upn).unwrap_or_default();
        let rows = inventory
            .list(&id, None, (per_drive.min(limit - out.len())) as i32)
            .await?;
        out.extend(rows.into_iter().map(|r| (owner.clone(), r)));
    }
    Ok(out)
}

/// Renders rows as an aligned table.
pub fn render(rows: &[(String, InventoryRow)]) -> String {
    let header = ["OWNER", "PATH", "SIZE", "MODIFIED", "MD5 / SHA-256"];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|(owner, r)| {
            [
                owner.clone(),
                if r.is_folder {
                    format!("{}/", r.path)
                } else {
                    r.path.clone()
                },
                if r.is_folder {
                    "-".to_owned()
                } else {
                    human_size(r.size)
                },
                r.modified_at
                    .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_default(),
                match (&r.md5, &r.sha256, &r.hash_unavailable) {
                    (Some(m), Some(s), _) => format!("{m} / {s}"),
                    (_, _, Some(why)) => format!("hash unavailable: {why}"),
                    _ if r.is_folder => String::new(),
                    _ => "hash unavailable".to_owned(),
                },
            ]
        })
        .collect();
    crate::table::render(header, &cells)
}

pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_a_file_manager() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KB");
        assert_eq!(human_size(5 * 1024 * 1024), "5.0 MB");
    }
}
