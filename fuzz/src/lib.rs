//! What the fuzz targets share: the normalisation context an ingest would build for a tenant
//! with one monitored drive, so that records naming it resolve and reach the deeper paths
//! (drive-relative paths, owners, sharing targets inside and outside the organisation).

use chrono::{TimeZone as _, Utc};
use filetrail_core::audit::sharing::TrustedDomains;
use filetrail_core::audit::{KnownDrive, NormaliseContext};

/// The context of `fuzz_targets/audit_blob.rs` and `fuzz_targets/export_lines.rs`.
///
/// # Panics
/// Never: the drive's web URL is a personal site.
#[must_use]
pub fn audit_context() -> NormaliseContext {
    let inserted_at = Utc
        .with_ymd_and_hms(2026, 11, 22, 10, 30, 0)
        .single()
        .unwrap_or_default();
    let mut ctx = NormaliseContext::new(
        TrustedDomains::new(["contoso.com", "contoso.onmicrosoft.com"]),
        inserted_at,
    );
    let added = ctx.add_drive(KnownDrive {
        drive_id: "b!fuzzdrive".to_owned(),
        owner_upn: "megan.bowen@contoso.com".to_owned(),
        web_url: "https://contoso-my.sharepoint.com/personal/megan_bowen_contoso_com/Documents".to_owned(),
    });
    assert!(added, "the fuzz drive's web URL must be a personal site");
    ctx
}

/// A Graph collection page read only for its members' ids: the oracle of the decoders' "every
/// listed member is decoded" property. It ignores what it does not name exactly as the decoders
/// do (serde skips unknown fields without checking their escapes or UTF-8), so it reads every
/// page they read.
#[derive(Debug, serde::Deserialize)]
pub struct ListedIds {
    #[serde(default)]
    pub value: Vec<ListedId>,
}

#[derive(Debug, serde::Deserialize)]
pub struct ListedId {
    pub id: String,
}
