//! The generated tenant: users, groups, their OneDrives, team-site libraries and drive items.
//!
//! Nothing per user, per membership or per file is stored. Every value is a pure function of the seed and an
//! index, and every id *encodes* its index (through a keyed permutation plus a check value), so a
//! lookup by id decodes the index, regenerates the object and compares ids: O(1), no tables. A
//! million-user tenant therefore costs the same memory as a ten-user one.

mod groups;
mod names;
mod tree;

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};

use crate::config::{FilesPerDrive, SimConfig};
use crate::prng::{Perm, Rng, guid, hash3, hash4, parse_guid, tag, unit};

pub(crate) use groups::UserCursor;
pub use groups::{GroupKind, SimGroup};
pub use tree::DriveItems;
pub(crate) use tree::DriveTree;

use names::{DEPARTMENTS, GIVEN_NAMES, JOB_TITLES, LANGUAGES, OFFICES, SURNAMES, TEAM_SITES};

/// Start of the window in which generated objects were created (2016-01-01T00:00:00Z).
const USERS_CREATED_FROM: i64 = 1_451_606_400;
/// Start of the window for generated files (2019-01-01T00:00:00Z).
pub(crate) const ITEMS_FROM: i64 = 1_546_300_800;
/// End of every generated time window (2025-06-30T00:00:00Z): fixed, so output never depends on
/// the clock.
pub(crate) const GENERATED_UNTIL: i64 = 1_751_241_600;
/// One OneDrive for Business quota: 1 TiB, as in the example of
/// <https://learn.microsoft.com/en-us/graph/api/drive-get>.
pub(crate) const DRIVE_QUOTA_TOTAL: u64 = 1_099_511_627_776;

const K_USER: u64 = tag(b"user");
const K_USER_ID: u64 = tag(b"user-id");
const K_NO_DRIVE: u64 = tag(b"no-drive");
const K_NO_DRIVE_KIND: u64 = tag(b"no-drive-kind");
const K_DRIVE_PERM: u64 = tag(b"drive-perm");
const K_DRIVE_ID: u64 = tag(b"drive-id");
const K_SITE_PERSONAL: u64 = tag(b"site-personal");
const K_SITE_TEAM: u64 = tag(b"site-team");
const K_WEB: u64 = tag(b"web");
const K_GROUP: u64 = tag(b"group");

/// Drive keys with this bit set are team-site libraries; without it, user OneDrives.
const SITE_DRIVE_BIT: u64 = 1 << 62;

/// The generated directory and its content. Cheap to clone: clones share everything, including
/// the only mutable part, the overlay of group membership changes made at run time.
#[derive(Debug, Clone)]
pub struct Tenant {
    inner: Arc<TenantInner>,
}

#[derive(Debug)]
struct TenantInner {
    seed: u64,
    /// Users generated with the tenant: generated content (trees, sharing, groups) draws from
    /// these only, so hiring more never changes what was served.
    users: u64,
    /// Users created since ([`Tenant::hire`]), after the generated ones in directory order.
    hired: std::sync::atomic::AtomicU64,
    files_per_drive: FilesPerDrive,
    no_drive_ratio: f64,
    team_sites: u32,
    tenant_id: String,
    domain: String,
    /// First label of the initial domain: `contoso` → `contoso.sharepoint.com`.
    sharepoint_name: String,
    /// Group layout and membership overlay.
    groups: groups::Groups,
}

/// Why a user has no OneDrive, which decides the error shape Graph answers with
/// (<https://learn.microsoft.com/en-us/graph/api/drive-get>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoDriveReason {
    /// 404 `ResourceNotFound` "User's mysite not found." (most common).
    MysiteNotFound,
    /// 404 `UnknownError` "404 FILE NOT FOUND" (newer variant).
    FileNotFound,
    /// 400 `BadRequest` "Unable to retrieve user's mysite URL.".
    MysiteUrlUnavailable,
}

/// A generated directory user.
#[derive(Debug, Clone, PartialEq)]
pub struct SimUser {
    /// Position in the directory (`0..user_count`).
    pub index: u64,
    /// Object id (GUID).
    pub id: String,
    /// `given.surname<index>@domain`, lower case.
    pub user_principal_name: String,
    /// "Given Surname".
    pub display_name: String,
    /// Given name.
    pub given_name: String,
    /// Surname.
    pub surname: String,
    /// Primary SMTP address; `None` for some unlicensed users, as Graph returns `null`.
    pub mail: Option<String>,
    /// Job title.
    pub job_title: Option<String>,
    /// Department (returned only on `$select`).
    pub department: Option<String>,
    /// Office location.
    pub office_location: Option<String>,
    /// Mobile phone.
    pub mobile_phone: Option<String>,
    /// Business phones (possibly empty).
    pub business_phones: Vec<String>,
    /// Preferred language, e.g. `en-US`.
    pub preferred_language: Option<String>,
    /// When the account was created.
    pub created: DateTime<Utc>,
    /// Whether the user has a provisioned OneDrive.
    pub has_drive: bool,
    /// For users without a OneDrive, which error Graph gives.
    pub no_drive_reason: Option<NoDriveReason>,
}

/// An identity as found in `createdBy`, `lastModifiedBy` and `owner` (identitySet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimIdentity {
    /// Object id of the user or group.
    pub id: String,
    /// Display name.
    pub display_name: String,
    /// E-mail address (UPN for users, group address for groups).
    pub email: Option<String>,
}

/// A generated drive: a user's OneDrive (`business`) or a team site's library (`documentLibrary`).
#[derive(Debug, Clone, PartialEq)]
pub struct SimDrive {
    /// Drive id, `b!…` (66 characters, like real ODB/SharePoint drive ids).
    pub id: String,
    /// `business` for OneDrives, `documentLibrary` for team-site libraries.
    pub drive_type: String,
    /// `OneDrive` or `Documents`.
    pub name: String,
    /// Always empty, as in real OneDrives.
    pub description: String,
    /// `https://{t}-my.sharepoint.com/personal/{upn_}/Documents` or
    /// `https://{t}.sharepoint.com/sites/{name}/Shared%20Documents`.
    pub web_url: String,
    /// Owning user (OneDrive) or group (library).
    pub owner: SimIdentity,
    /// Whether `owner` is a group (rendered as `owner.group`) rather than a user.
    pub owner_is_group: bool,
    /// Index of the owning user, for OneDrives.
    pub owner_user: Option<u64>,
    /// SharePoint site id, `host,siteGuid,webGuid`.
    pub site_id: String,
    /// When the drive was created.
    pub created: DateTime<Utc>,
    /// When the drive was last modified.
    pub modified: DateTime<Utc>,
}

/// A generated driveItem (file or folder).
#[derive(Debug, Clone, PartialEq)]
pub struct SimItem {
    /// Item id, unique within the drive (`01` + 32 base32 characters, like ODB ids).
    pub id: String,
    /// File or folder name; `root` for the root.
    pub name: String,
    /// Path relative to the drive root, `/folder/sub/file.txt`; `/` for the root itself.
    pub path: String,
    /// Parent item id; `None` for the root.
    pub parent_id: Option<String>,
    /// Whether this is a folder (or the root).
    pub is_folder: bool,
    /// Whether this is the drive's root.
    pub is_root: bool,
    /// Size in bytes; for folders, the sum of everything below.
    pub size: u64,
    /// Creation time.
    pub created: DateTime<Utc>,
    /// Last modification time.
    pub modified: DateTime<Utc>,
    /// `"{GUID},N"` including the double quotes, as Graph sends it.
    pub etag: String,
    /// `"c:{GUID},N"` for files; `None` for folders (ODB sends none for folders,
    /// <https://learn.microsoft.com/en-us/graph/api/resources/driveitem#properties>).
    pub ctag: Option<String>,
    /// Creator.
    pub created_by: SimIdentity,
    /// Last modifier.
    pub modified_by: SimIdentity,
    /// MIME type for files.
    pub mime_type: Option<String>,
    /// Direct children, for folders.
    pub child_count: u32,
    /// Base64 `quickXorHash` for files. Derived, not computed from the served content.
    pub quick_xor_hash: Option<String>,
    /// Browser URL of the item.
    pub web_url: String,
}

/// Which drive a drive id designates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum DriveRef {
    /// The OneDrive of user `index`.
    User(u64),
    /// The library of team site `index`.
    Site(u32),
}

impl DriveRef {
    pub(crate) fn key(self) -> u64 {
        match self {
            Self::User(i) => i,
            Self::Site(j) => SITE_DRIVE_BIT | u64::from(j),
        }
    }

    fn from_key(key: u64) -> Self {
        if key & SITE_DRIVE_BIT != 0 {
            Self::Site((key & 0xFFFF_FFFF) as u32)
        } else {
            Self::User(key)
        }
    }
}

fn ts(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

/// Mask for the 48 index-bearing bits of an encoded GUID.
const MASK_48: u64 = (1 << 48) - 1;

impl Tenant {
    pub(crate) fn new(config: &SimConfig) -> Self {
        let domain = config.domain.trim().to_ascii_lowercase();
        let first = domain.split('.').next().unwrap_or("contoso");
        let sharepoint_name: String = first.chars().filter(char::is_ascii_alphanumeric).collect();
        Self {
            inner: Arc::new(TenantInner {
                seed: config.seed,
                users: config.users,
                hired: std::sync::atomic::AtomicU64::new(0),
                files_per_drive: config.files_per_drive,
                no_drive_ratio: config.no_drive_ratio,
                team_sites: config.team_sites,
                tenant_id: config.effective_tenant_id(),
                domain,
                sharepoint_name: if sharepoint_name.is_empty() {
                    "contoso".to_owned()
                } else {
                    sharepoint_name
                },
                groups: groups::Groups::new(config),
            }),
        }
    }

    pub(crate) fn seed(&self) -> u64 {
        self.inner.seed
    }

    /// Directory (tenant) id.
    #[must_use]
    pub fn tenant_id(&self) -> &str {
        &self.inner.tenant_id
    }

    /// Initial domain (lower case).
    #[must_use]
    pub fn domain(&self) -> &str {
        &self.inner.domain
    }

    /// `https://{name}.sharepoint.com`.
    #[must_use]
    pub fn sharepoint_url(&self) -> String {
        format!("https://{}.sharepoint.com", self.inner.sharepoint_name)
    }

    /// `https://{name}-my.sharepoint.com`.
    #[must_use]
    pub fn my_sharepoint_url(&self) -> String {
        format!("https://{}-my.sharepoint.com", self.inner.sharepoint_name)
    }

    /// Number of users in the directory now (those hired at run time included).
    #[must_use]
    pub fn user_count(&self) -> u64 {
        self.inner.users + self.inner.hired.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Number of users the tenant was generated with: what generated content draws from.
    pub(crate) fn generated_users(&self) -> u64 {
        self.inner.users
    }

    /// Creates `n` users (appended to the directory, in no group), as an admin adding new hires
    /// would; each has a OneDrive unless `no_drive_ratio` decides otherwise. Returns them.
    pub fn hire(&self, n: u64) -> Vec<SimUser> {
        let first = self.inner.users + self.inner.hired.fetch_add(n, std::sync::atomic::Ordering::AcqRel);
        (first..first + n).map(|i| self.user(i)).collect()
    }

    /// Number of team sites.
    #[must_use]
    pub fn team_site_count(&self) -> u32 {
        self.inner.team_sites
    }

    pub(crate) fn files_per_drive(&self) -> FilesPerDrive {
        self.inner.files_per_drive
    }

    /// All users, generated lazily in directory order.
    pub fn users(&self) -> impl Iterator<Item = SimUser> + '_ {
        (0..self.user_count()).map(|i| self.user(i))
    }

    /// Number of users that have a OneDrive (walks every user: O(users)).
    #[must_use]
    pub fn users_with_drive(&self) -> u64 {
        (0..self.user_count()).filter(|i| self.has_drive(*i)).count() as u64
    }

    /// A GUID whose low 48 bits are `perm(index)` and whose other bits are a hash of the index.
    fn keyed_guid(&self, kind: u64, index: u64) -> String {
        let perm = Perm::new(48, hash3(self.inner.seed, kind, u64::MAX));
        let hi = hash3(self.inner.seed, kind, index);
        let lo = (hash4(self.inner.seed, kind, index, 1) & !MASK_48) | perm.forward(index);
        guid(hi, lo)
    }

    /// Inverse of [`Self::keyed_guid`]: the index, if `s` is exactly the GUID of that index.
    fn decode_keyed_guid(&self, kind: u64, s: &str) -> Option<u64> {
        let (_, lo) = parse_guid(s)?;
        let perm = Perm::new(48, hash3(self.inner.seed, kind, u64::MAX));
        let index = perm.inverse(lo & MASK_48);
        (self.keyed_guid(kind, index) == s.to_ascii_lowercase()).then_some(index)
    }

    fn user_id(&self, index: u64) -> String {
        self.keyed_guid(K_USER_ID, index)
    }

    fn has_drive(&self, index: u64) -> bool {
        unit(hash3(self.inner.seed, K_NO_DRIVE, index)) >= self.inner.no_drive_ratio
    }

    /// Indexes into `GIVEN_NAMES` and `SURNAMES` of user `index`'s names: the first two draws of
    /// [`Self::user`], without building the user (a display-name scan of a million users stays
    /// in milliseconds).
    pub(crate) fn name_indexes(&self, index: u64) -> (usize, usize) {
        let mut r = Rng::new(hash3(self.inner.seed, K_USER, index));
        let given = r.below(GIVEN_NAMES.len() as u64) as usize;
        let surname = r.below(SURNAMES.len() as u64) as usize;
        (given, surname)
    }

    /// The `(given, surname)` index pairs whose display name equals `name`, ignoring case.
    pub(crate) fn name_pairs_matching(&self, name: &str) -> Vec<(usize, usize)> {
        let wanted = name.to_lowercase();
        let mut pairs = Vec::new();
        for (gi, (given, _)) in GIVEN_NAMES.iter().enumerate() {
            let Some(rest) = wanted.strip_prefix(&given.to_lowercase()) else {
                continue;
            };
            let Some(rest) = rest.strip_prefix(' ') else { continue };
            for (si, (surname, _)) in SURNAMES.iter().enumerate() {
                if surname.to_lowercase() == rest {
                    pairs.push((gi, si));
                }
            }
        }
        pairs
    }

    /// The user at `index`. Generation is total: indexes past `user_count()` still produce a
    /// user, but lookups by id or UPN never resolve to them.
    #[must_use]
    pub fn user(&self, index: u64) -> SimUser {
        let seed = self.inner.seed;
        let mut r = Rng::new(hash3(seed, K_USER, index));
        let (given, given_ascii) = *r.pick(GIVEN_NAMES);
        let (surname, surname_ascii) = *r.pick(SURNAMES);
        let upn = format!("{given_ascii}.{surname_ascii}{index}@{}", self.inner.domain);
        let has_drive = self.has_drive(index);
        let no_drive_reason = (!has_drive).then(|| {
            let u = unit(hash3(seed, K_NO_DRIVE_KIND, index));
            if u < 0.80 {
                NoDriveReason::MysiteNotFound
            } else if u < 0.95 {
                NoDriveReason::FileNotFound
            } else {
                NoDriveReason::MysiteUrlUnavailable
            }
        });
        // Unlicensed users (no OneDrive) often have no mailbox either: Graph returns mail null.
        let mail = if !has_drive && r.chance(0.5) {
            None
        } else {
            Some(upn.clone())
        };
        let job_title = r.chance(0.85).then(|| (*r.pick(JOB_TITLES)).to_owned());
        let department = r.chance(0.8).then(|| (*r.pick(DEPARTMENTS)).to_owned());
        let office_location = r.chance(0.6).then(|| (*r.pick(OFFICES)).to_owned());
        let mobile_phone = r.chance(0.4).then(|| format!("+1 425 555 {:04}", r.below(10_000)));
        let business_phones = if r.chance(0.7) {
            vec![format!("+1 425 555 {:04}", r.below(10_000))]
        } else {
            Vec::new()
        };
        let preferred_language = r.chance(0.75).then(|| (*r.pick(LANGUAGES)).to_owned());
        let created = ts(r.range(USERS_CREATED_FROM as u64, ITEMS_FROM as u64) as i64);
        SimUser {
            index,
            id: self.user_id(index),
            user_principal_name: upn,
            display_name: format!("{given} {surname}"),
            given_name: given.to_owned(),
            surname: surname.to_owned(),
            mail,
            job_title,
            department,
            office_location,
            mobile_phone,
            business_phones,
            preferred_language,
            created,
            has_drive,
            no_drive_reason,
        }
    }

    /// The user with this object id (any case) or user principal name (case-insensitive).
    #[must_use]
    pub fn find_user(&self, id_or_upn: &str) -> Option<SimUser> {
        let index = if id_or_upn.contains('@') {
            let lower = id_or_upn.to_ascii_lowercase();
            let (local, domain) = lower.split_once('@')?;
            if domain != self.inner.domain {
                return None;
            }
            let digits = local.len() - local.trim_end_matches(|c: char| c.is_ascii_digit()).len();
            let index: u64 = local[local.len() - digits..].parse().ok()?;
            if index >= self.user_count() {
                return None;
            }
            let user = self.user(index);
            return (user.user_principal_name == lower).then_some(user);
        } else {
            self.decode_keyed_guid(K_USER_ID, id_or_upn)?
        };
        (index < self.user_count()).then(|| self.user(index))
    }

    /// The identity (`{id, displayName, email}`) of user `index`.
    #[must_use]
    pub fn identity(&self, index: u64) -> SimIdentity {
        let u = self.user(index);
        SimIdentity {
            id: u.id,
            display_name: u.display_name,
            email: Some(u.user_principal_name),
        }
    }

    /// Drive id for a drive reference: `b!` + base64url of 48 bytes (the shape of real
    /// ODB/SharePoint drive ids), the first 8 bytes carrying the permuted drive key.
    pub(crate) fn drive_id(&self, drive: DriveRef) -> String {
        let key = drive.key();
        let seed = self.inner.seed;
        let perm = Perm::new(64, hash3(seed, K_DRIVE_PERM, 0));
        let mut bytes = [0u8; 48];
        bytes[..8].copy_from_slice(&perm.forward(key).to_be_bytes());
        for (j, chunk) in bytes[8..].chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&hash4(seed, K_DRIVE_ID, key, j as u64).to_be_bytes());
        }
        format!("b!{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Decodes a drive id. `None` unless it designates an existing drive (a user with a OneDrive,
    /// or a configured team site).
    pub(crate) fn decode_drive_id(&self, id: &str) -> Option<DriveRef> {
        let raw = id.strip_prefix("b!")?;
        let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
        if bytes.len() != 48 {
            return None;
        }
        let mut first = [0u8; 8];
        first.copy_from_slice(&bytes[..8]);
        let perm = Perm::new(64, hash3(self.inner.seed, K_DRIVE_PERM, 0));
        let drive = DriveRef::from_key(perm.inverse(u64::from_be_bytes(first)));
        (self.drive_exists(drive) && self.drive_id(drive) == id).then_some(drive)
    }

    pub(crate) fn drive_exists(&self, drive: DriveRef) -> bool {
        match drive {
            DriveRef::User(i) => i < self.user_count() && self.has_drive(i),
            DriveRef::Site(j) => j < self.inner.team_sites,
        }
    }

    /// The OneDrive of user `index`, if the user exists and has one.
    #[must_use]
    pub fn drive_of_user(&self, index: u64) -> Option<SimDrive> {
        self.drive(DriveRef::User(index))
    }

    /// The drive with this id (OneDrive or team-site library).
    #[must_use]
    pub fn drive_by_id(&self, drive_id: &str) -> Option<SimDrive> {
        self.decode_drive_id(drive_id).and_then(|d| self.drive(d))
    }

    /// The team-site document libraries (`driveType` `documentLibrary`). They are never any
    /// user's drive.
    #[must_use]
    pub fn team_site_drives(&self) -> Vec<SimDrive> {
        (0..self.inner.team_sites)
            .filter_map(|j| self.drive(DriveRef::Site(j)))
            .collect()
    }

    fn team_site_name(j: u32) -> String {
        let base = TEAM_SITES[j as usize % TEAM_SITES.len()];
        let round = j as usize / TEAM_SITES.len();
        if round == 0 {
            base.to_owned()
        } else {
            format!("{base} {}", round + 1)
        }
    }

    /// The SharePoint site id (`host,siteGuid,webGuid`) of a drive's site.
    pub(crate) fn site_id(&self, drive: DriveRef) -> String {
        let (host, kind, index) = match drive {
            DriveRef::User(i) => (
                format!("{}-my.sharepoint.com", self.inner.sharepoint_name),
                K_SITE_PERSONAL,
                i,
            ),
            DriveRef::Site(j) => (
                format!("{}.sharepoint.com", self.inner.sharepoint_name),
                K_SITE_TEAM,
                u64::from(j),
            ),
        };
        let web = guid(
            hash4(self.inner.seed, K_WEB, kind, index),
            hash4(self.inner.seed, K_WEB, kind, !index),
        );
        format!("{host},{},{web}", self.keyed_guid(kind, index))
    }

    /// Resolves a site id (`host,siteGuid,webGuid`, or just `host,siteGuid`) to its drive.
    pub(crate) fn decode_site_id(&self, site_id: &str) -> Option<DriveRef> {
        let mut parts = site_id.split(',');
        let host = parts.next()?.to_ascii_lowercase();
        let site_guid = parts.next()?;
        let drive = if host == format!("{}-my.sharepoint.com", self.inner.sharepoint_name) {
            DriveRef::User(self.decode_keyed_guid(K_SITE_PERSONAL, site_guid)?)
        } else if host == format!("{}.sharepoint.com", self.inner.sharepoint_name) {
            DriveRef::Site(u32::try_from(self.decode_keyed_guid(K_SITE_TEAM, site_guid)?).ok()?)
        } else {
            return None;
        };
        if let Some(web) = parts.next() {
            let full = self.site_id(drive);
            if !full.to_ascii_lowercase().ends_with(&web.to_ascii_lowercase()) {
                return None;
            }
        }
        self.drive_exists(drive).then_some(drive)
    }

    /// The team site's display name and URL name, for team-site drives.
    pub(crate) fn team_site(&self, j: u32) -> (String, String) {
        let display = Self::team_site_name(j);
        let url_name: String = display.chars().filter(|c| !c.is_whitespace()).collect();
        (display, url_name)
    }

    /// The drive behind a reference, if it exists.
    pub(crate) fn drive(&self, drive: DriveRef) -> Option<SimDrive> {
        if !self.drive_exists(drive) {
            return None;
        }
        let seed = self.inner.seed;
        let id = self.drive_id(drive);
        let site_id = self.site_id(drive);
        Some(match drive {
            DriveRef::User(i) => {
                let user = self.user(i);
                let personal = user.user_principal_name.replace(['.', '@'], "_");
                let created = user.created + chrono::Duration::days((hash3(seed, K_WEB, i) % 60) as i64);
                SimDrive {
                    id,
                    drive_type: "business".to_owned(),
                    name: "OneDrive".to_owned(),
                    description: String::new(),
                    web_url: format!("{}/personal/{personal}/Documents", self.my_sharepoint_url()),
                    owner: SimIdentity {
                        id: user.id,
                        display_name: user.display_name,
                        email: Some(user.user_principal_name),
                    },
                    owner_is_group: false,
                    owner_user: Some(i),
                    site_id,
                    created,
                    modified: ts(GENERATED_UNTIL),
                }
            }
            DriveRef::Site(j) => {
                let (display, url_name) = self.team_site(j);
                SimDrive {
                    id,
                    drive_type: "documentLibrary".to_owned(),
                    name: "Documents".to_owned(),
                    description: String::new(),
                    web_url: format!("{}/sites/{url_name}/Shared%20Documents", self.sharepoint_url()),
                    owner: SimIdentity {
                        id: self.keyed_guid(K_GROUP, u64::from(j)),
                        display_name: display,
                        email: Some(format!("{}@{}", url_name.to_ascii_lowercase(), self.inner.domain)),
                    },
                    owner_is_group: true,
                    owner_user: None,
                    site_id,
                    created: ts(USERS_CREATED_FROM + i64::from(j) * 86_400),
                    modified: ts(GENERATED_UNTIL),
                }
            }
        })
    }

    /// Every item of a drive except its root, depth-first with parents before children — the
    /// order of a full delta enumeration. Empty for an unknown drive id.
    #[must_use]
    pub fn drive_items(&self, drive_id: &str) -> DriveItems {
        let resolved = self
            .decode_drive_id(drive_id)
            .and_then(|d| self.drive(d).map(|sd| (d, sd)));
        DriveItems::new(self.clone(), resolved)
    }

    /// The root item of a drive.
    #[must_use]
    pub fn drive_root(&self, drive_id: &str) -> Option<SimItem> {
        let d = self.decode_drive_id(drive_id)?;
        let drive = self.drive(d)?;
        let tree = DriveTree::build(self, d);
        Some(tree.item(self, &drive, 0))
    }

    /// One item of a drive by id (the root included), from the generated base state.
    #[must_use]
    pub fn drive_item(&self, drive_id: &str, item_id: &str) -> Option<SimItem> {
        let d = self.decode_drive_id(drive_id)?;
        let drive = self.drive(d)?;
        let ordinal = tree::decode_item_id(self, d, item_id)?;
        let tree = DriveTree::build(self, d);
        (ordinal < tree.len()).then(|| tree.item(self, &drive, ordinal))
    }

    /// Number of items in a drive including the root (0 for an unknown drive).
    #[must_use]
    pub fn drive_item_count(&self, drive_id: &str) -> usize {
        self.decode_drive_id(drive_id)
            .map_or(0, |d| DriveTree::build(self, d).len())
    }

    /// A fresh item id for a drive, beyond every generated item (for mutation hooks).
    pub(crate) fn item_id(&self, drive: DriveRef, ordinal: usize) -> String {
        tree::item_id(self, drive, ordinal)
    }

    pub(crate) fn decode_item_id(&self, drive: DriveRef, item_id: &str) -> Option<usize> {
        tree::decode_item_id(self, drive, item_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(users: u64) -> Tenant {
        Tenant::new(&SimConfig {
            users,
            ..SimConfig::with_seed(7)
        })
    }

    #[test]
    fn user_ids_and_upns_resolve_back_to_their_user() {
        let t = tenant(1000);
        for i in [0, 1, 17, 999] {
            let u = t.user(i);
            assert_eq!(t.find_user(&u.id).map(|x| x.index), Some(i));
            assert_eq!(t.find_user(&u.id.to_uppercase()).map(|x| x.index), Some(i));
            assert_eq!(t.find_user(&u.user_principal_name).map(|x| x.index), Some(i));
            assert_eq!(
                t.find_user(&u.user_principal_name.to_uppercase()).map(|x| x.index),
                Some(i)
            );
        }
    }

    #[test]
    fn forged_or_out_of_range_ids_do_not_resolve() {
        let t = tenant(10);
        let outside = t.user(10);
        assert!(t.find_user(&outside.id).is_none());
        assert!(t.find_user(&outside.user_principal_name).is_none());
        let mut forged = t.user(3).id;
        forged.replace_range(0..1, if forged.starts_with('0') { "1" } else { "0" });
        assert!(t.find_user(&forged).is_none());
        assert!(t.find_user("00000000-0000-0000-0000-000000000000").is_none());
        assert!(t.find_user("nobody@contoso.onmicrosoft.com").is_none());
    }

    #[test]
    fn drive_ids_round_trip_and_team_sites_are_not_user_drives() {
        let t = tenant(50);
        for i in 0..50 {
            match t.drive_of_user(i) {
                Some(d) => {
                    assert_eq!(t.decode_drive_id(&d.id), Some(DriveRef::User(i)));
                    assert_eq!(d.id.len(), 66);
                    assert_eq!(t.decode_site_id(&d.site_id), Some(DriveRef::User(i)));
                }
                None => assert!(!t.user(i).has_drive),
            }
        }
        let sites = t.team_site_drives();
        assert_eq!(sites.len(), 3);
        for (j, s) in sites.iter().enumerate() {
            assert_eq!(s.drive_type, "documentLibrary");
            assert_eq!(t.decode_drive_id(&s.id), Some(DriveRef::Site(j as u32)));
            assert!(s.web_url.ends_with("/Shared%20Documents"));
        }
    }

    #[test]
    fn name_indexes_match_the_generated_display_names() {
        let t = tenant(500);
        for i in 0..500 {
            let (gi, si) = t.name_indexes(i);
            let user = t.user(i);
            assert_eq!(format!("{} {}", GIVEN_NAMES[gi].0, SURNAMES[si].0), user.display_name);
            assert!(
                t.name_pairs_matching(&user.display_name.to_uppercase())
                    .contains(&(gi, si))
            );
        }
    }

    #[test]
    fn generation_is_deterministic_per_seed() {
        let a = tenant(5);
        let b = tenant(5);
        assert_eq!(a.user(3), b.user(3));
        let c = Tenant::new(&SimConfig {
            users: 5,
            ..SimConfig::with_seed(8)
        });
        assert_ne!(a.user(3).id, c.user(3).id);
    }
}
