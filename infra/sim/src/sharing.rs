//! Sharing state of driveItems: permissions (owner, sharing links, direct grants, invitations),
//! the `shared` facet, and the change markers delta uses to report sharing changes.
//!
//! Like the rest of the tenant, sharing is lazy. A generated file of a OneDrive carries *seeded*
//! sharing — a pure function of `(seed, drive, ordinal)`: about [`SEEDED_SHARE_RATE`] of the
//! files, some by anonymous link, some with people outside the tenant — so an exposure report on
//! a fresh tenant is not empty and nothing is stored for it. The first change to an item's
//! sharing (an injected share, link or revocation, a `DELETE …/permissions/{id}`) copies its
//! current permissions into an overlay, and from then on the overlay is the truth for that item.
//!
//! Permission shapes follow the permission resource on OneDrive for Business
//! (<https://learn.microsoft.com/en-us/graph/api/resources/permission>; the examples of
//! <https://learn.microsoft.com/en-us/graph/api/driveitem-list-permissions>): `link` {type, scope,
//! webUrl, preventsDownload} for links, `grantedToIdentitiesV2` (and the deprecated
//! `grantedToIdentities`) for the people of a specific-people link, `grantedToV2` (and the
//! deprecated `grantedTo`) for a direct grant, `invitation` {email, signInRequired} for an outside
//! address, `roles` read / write / owner, `shareId`, `expirationDateTime` when set, and never
//! `inheritedFrom` ("OneDrive for Business and SharePoint document libraries do not return the
//! inheritedFrom property").
//!
//! Link permission ids are the links' `UniqueSharingId` as the audit records carry them (one
//! link per item and scope: creating a link of a scope the item already has updates that link,
//! as SharePoint hands back an existing link of the same kind); direct grants are identified by
//! the base64url of the grantee's claims login name (`i:0#.f|membership|…`), the shape ODB's ids
//! have.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::changes::Entry;
use crate::inject::AccessLevel;
use crate::prng::{Rng, guid, hash3, hash4, siphash24, tag};
use crate::server::SimState;
use crate::tenant::{DriveRef, DriveTree, GENERATED_UNTIL, SimDrive, SimItem, Tenant};

/// Share of a OneDrive's generated files that start out shared (our choice: enough that a
/// 300-user tenant shows a few hundred shared files, few enough to keep drives mostly private).
pub const SEEDED_SHARE_RATE: f64 = 0.04;

const K_SEED_SHARE: u64 = tag(b"seed-share");
const K_SHARING_ID: u64 = tag(b"inject-sharing-id");
const K_SHARE_ID: u64 = tag(b"share-id");
const K_GUEST: u64 = tag(b"inject-puid");
const K_SITE_USER: u64 = tag(b"site-user");

/// External domains guests come from (reserved or fictitious names).
pub(crate) const GUEST_DOMAINS: &[&str] = &[
    "fabrikam.com",
    "northwind.example",
    "adatum.example",
    "tailspin.example",
];
pub(crate) const GUEST_NAMES: &[&str] = &["dana", "lee", "sam", "robin", "alex", "kim", "noor", "jules"];

/// Who a sharing link lets in (`link.scope`,
/// <https://learn.microsoft.com/en-us/graph/api/resources/sharinglink#properties>).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkScope {
    /// Anyone with the link, no sign-in.
    Anonymous,
    /// Signed-in people of the tenant.
    Organization,
    /// Specific people.
    Users,
}

impl LinkScope {
    /// The wire value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anonymous => "anonymous",
            Self::Organization => "organization",
            Self::Users => "users",
        }
    }

    /// Breadth, for the `shared` facet: the broadest scope wins.
    fn breadth(self) -> u8 {
        match self {
            Self::Anonymous => 3,
            Self::Organization => 2,
            Self::Users => 1,
        }
    }

    /// The salt the injector's `UniqueSharingId` uses for this scope.
    fn salt(self) -> u64 {
        match self {
            Self::Anonymous => 1,
            Self::Organization => 2,
            Self::Users => 3,
        }
    }
}

/// A sharing link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimLink {
    /// Who it lets in.
    pub scope: LinkScope,
    /// View or edit (`link.type`).
    pub access: AccessLevel,
    /// The link itself (`link.webUrl`).
    pub web_url: String,
}

/// A person (or, for a team site's owners, a SharePoint group) a permission is granted to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimGrantee {
    /// Directory object id; `None` for an outside address not (yet) in the directory, which
    /// only has a `siteUser`.
    pub id: Option<String>,
    /// Display name.
    pub display_name: String,
    /// Email address (UPN for members).
    pub email: Option<String>,
    /// SharePoint claims login name (`i:0#.f|membership|…`).
    pub login_name: String,
    /// Outside the tenant (a guest or an invited address).
    pub external: bool,
    /// A SharePoint group (`siteGroup`) rather than a person.
    pub site_group: bool,
}

/// One permission of a driveItem (the simulator's ground truth).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimPermission {
    /// The permission id (a link's `UniqueSharingId`, or the base64url of a grantee's login).
    pub id: String,
    /// `owner`, `read` or `write`.
    pub roles: Vec<String>,
    /// The link, for link permissions.
    pub link: Option<SimLink>,
    /// Who: the owner, a direct grantee, or the people of a specific-people link.
    pub grantees: Vec<SimGrantee>,
    /// The address invited, for a direct share with someone outside the directory.
    pub invitation: Option<String>,
    /// When the permission expires (`expirationDateTime`), if ever.
    pub expires: Option<DateTime<Utc>>,
    /// `shareId`, for links and invitations.
    pub share_id: Option<String>,
    /// When it was granted (the item's `shared.sharedDateTime` is the earliest of these).
    pub created: DateTime<Utc>,
}

impl SimPermission {
    /// Whether this is the owner's permission (never removed).
    #[must_use]
    pub fn is_owner(&self) -> bool {
        self.roles.iter().any(|r| r == "owner")
    }

    /// The scope this permission exposes the item to: its link's, or `users` for a grant.
    #[must_use]
    pub fn scope(&self) -> LinkScope {
        self.link.as_ref().map_or(LinkScope::Users, |l| l.scope)
    }
}

/// The base64url permission id of a direct grant to `login_name`.
pub(crate) fn grant_id(login_name: &str) -> String {
    URL_SAFE_NO_PAD.encode(login_name.as_bytes())
}

/// `i:0#.f|membership|{upn}` (lower-case), SharePoint's claims login of a directory account.
pub(crate) fn membership_login(upn: &str) -> String {
    format!("i:0#.f|membership|{}", upn.to_ascii_lowercase())
}

/// The `UniqueSharingId` of an item's link of `scope` (the injector's audit records and the
/// link permission's id are the same value).
pub(crate) fn sharing_id(seed: u64, drive_key: u64, item_id: &str, scope: LinkScope) -> String {
    let h = siphash24(seed, K_SHARING_ID ^ scope.salt(), item_id.as_bytes());
    guid(h, hash4(seed, K_SHARING_ID, drive_key, h))
}

/// A guest's directory object id, derived from the address (the injector's actors use it too).
pub(crate) fn guest_object_id(seed: u64, email: &str) -> String {
    let h = siphash24(seed, K_GUEST, email.to_ascii_lowercase().as_bytes());
    guid(hash3(seed, K_GUEST, h), h)
}

/// A guest account (`x_domain#EXT#@tenant`) of an outside address.
pub(crate) fn guest_grantee(tenant: &Tenant, email: &str) -> SimGrantee {
    let email = email.to_ascii_lowercase();
    let upn = format!("{}#EXT#@{}", email.replace('@', "_"), tenant.domain());
    SimGrantee {
        id: Some(guest_object_id(tenant.seed(), &email)),
        display_name: email.split('@').next().unwrap_or_default().to_owned(),
        login_name: membership_login(&upn),
        email: Some(email),
        external: true,
        site_group: false,
    }
}

/// An outside address invited but not in the directory: a `siteUser` only.
pub(crate) fn invitee_grantee(email: &str) -> SimGrantee {
    let email = email.to_ascii_lowercase();
    SimGrantee {
        id: None,
        display_name: email.clone(),
        login_name: format!("i:0#.f|membership|urn:spo:guest#{email}"),
        email: Some(email),
        external: true,
        site_group: false,
    }
}

/// A member of the tenant.
pub(crate) fn member_grantee(tenant: &Tenant, index: u64) -> SimGrantee {
    let u = tenant.user(index);
    SimGrantee {
        id: Some(u.id),
        display_name: u.display_name,
        login_name: membership_login(&u.user_principal_name),
        email: Some(u.user_principal_name),
        external: false,
        site_group: false,
    }
}

/// The drive owner's permission: a OneDrive's user, a team site's Owners group.
pub(crate) fn owner_permission(drive: &SimDrive) -> SimPermission {
    let grantee = if drive.owner_is_group {
        let name = format!("{} Owners", drive.owner.display_name);
        SimGrantee {
            id: Some("3".to_owned()),
            display_name: name.clone(),
            email: None,
            login_name: name,
            external: false,
            site_group: true,
        }
    } else {
        SimGrantee {
            id: Some(drive.owner.id.clone()),
            display_name: drive.owner.display_name.clone(),
            login_name: membership_login(drive.owner.email.as_deref().unwrap_or_default()),
            email: drive.owner.email.clone(),
            external: false,
            site_group: false,
        }
    };
    SimPermission {
        id: grant_id(&grantee.login_name),
        roles: vec!["owner".to_owned()],
        link: None,
        grantees: vec![grantee],
        invitation: None,
        expires: None,
        share_id: None,
        created: drive.created,
    }
}

fn roles_of(access: AccessLevel) -> Vec<String> {
    vec![
        match access {
            AccessLevel::View => "read",
            AccessLevel::Edit => "write",
        }
        .to_owned(),
    ]
}

fn share_id(seed: u64, permission_id: &str) -> String {
    let h = siphash24(seed, K_SHARE_ID, permission_id.as_bytes());
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&h.to_be_bytes());
    bytes[8..].copy_from_slice(&hash3(seed, K_SHARE_ID, h).to_be_bytes());
    format!("s!{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A link URL as ODB forms them: `{my}/:w:/g/personal/{user}/E…` (`w` Word, `x` Excel, `p`
/// PowerPoint, `b` PDF, `f` folder, `u` anything else).
fn link_url(seed: u64, drive: &SimDrive, item: &SimItem, permission_id: &str) -> String {
    let kind = if item.is_folder {
        'f'
    } else {
        match item
            .name
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .as_deref()
        {
            Some("docx" | "doc") => 'w',
            Some("xlsx" | "xls" | "csv") => 'x',
            Some("pptx" | "ppt") => 'p',
            Some("pdf") => 'b',
            _ => 'u',
        }
    };
    let h = siphash24(seed, K_SHARE_ID ^ 1, permission_id.as_bytes());
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&h.to_be_bytes());
    bytes[8..].copy_from_slice(&hash3(seed, K_SHARE_ID ^ 1, h).to_be_bytes());
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let site = drive
        .web_url
        .rsplit_once('/')
        .map_or(drive.web_url.as_str(), |(s, _)| s);
    match site.split_once("/personal/") {
        Some((host, person)) => format!("{host}/:{kind}:/g/personal/{person}/E{token}"),
        None => format!("{site}/:{kind}:/s/E{token}"),
    }
}

/// A link permission of `scope` on `item`, with the id the injector's records carry.
pub(crate) fn link_permission(
    tenant: &Tenant,
    d: DriveRef,
    drive: &SimDrive,
    item: &SimItem,
    (scope, access): (LinkScope, AccessLevel),
    people: Vec<SimGrantee>,
    created: DateTime<Utc>,
) -> SimPermission {
    let seed = tenant.seed();
    let id = sharing_id(seed, d.key(), &item.id, scope);
    SimPermission {
        roles: roles_of(access),
        link: Some(SimLink {
            scope,
            access,
            web_url: link_url(seed, drive, item, &id),
        }),
        grantees: people,
        invitation: None,
        expires: None,
        share_id: Some(share_id(seed, &id)),
        created,
        id,
    }
}

/// A direct grant to one person (an invitation when the person is outside the directory).
pub(crate) fn grant_permission(
    seed: u64,
    grantee: SimGrantee,
    access: AccessLevel,
    created: DateTime<Utc>,
) -> SimPermission {
    let id = grant_id(&grantee.login_name);
    let invitation = grantee.id.is_none().then(|| grantee.email.clone().unwrap_or_default());
    SimPermission {
        roles: roles_of(access),
        link: None,
        share_id: invitation.as_ref().map(|_| share_id(seed, &id)),
        invitation,
        grantees: vec![grantee],
        expires: None,
        created,
        id,
    }
}

fn random_guest_email(rng: &mut Rng) -> String {
    format!(
        "{}.{}@{}",
        rng.pick(GUEST_NAMES),
        rng.below(1000),
        rng.pick(GUEST_DOMAINS)
    )
}

fn other_member(tenant: &Tenant, rng: &mut Rng, owner: u64) -> Option<u64> {
    let users = tenant.generated_users();
    if users < 2 {
        return None;
    }
    let mut i = rng.below(users);
    if i == owner {
        i = (i + 1) % users;
    }
    Some(i)
}

/// The sharing a generated file starts with: none for most; for [`SEEDED_SHARE_RATE`] of a
/// OneDrive's files one permission — an anonymous link (30 %, half of them expiring), an
/// organization link (25 %), a specific-people link to a member and maybe a guest (20 %), or a
/// direct grant to a member, an existing guest or an invited outside address (25 %). Team-site
/// libraries and folders start unshared.
fn seeded(tenant: &Tenant, d: DriveRef, drive: &SimDrive, tree: &DriveTree, ordinal: usize) -> Vec<SimPermission> {
    let DriveRef::User(owner) = d else {
        return Vec::new();
    };
    if ordinal == 0 || ordinal >= tree.len() || tree.node(ordinal).is_folder {
        return Vec::new();
    }
    let seed = tenant.seed();
    let mut rng = Rng::new(hash4(seed, K_SEED_SHARE, d.key(), ordinal as u64));
    if !rng.chance(SEEDED_SHARE_RATE) {
        return Vec::new();
    }
    let item = tree.item(tenant, drive, ordinal);
    let node = tree.node(ordinal);
    let from = node.created.max(0) as u64;
    let created =
        DateTime::from_timestamp(rng.range(from, (GENERATED_UNTIL as u64).max(from + 1)) as i64, 0).unwrap_or_default();
    let access = if rng.chance(0.35) {
        AccessLevel::Edit
    } else {
        AccessLevel::View
    };
    let kind = rng.unit();
    let permission = if kind < 0.30 {
        let mut p = link_permission(
            tenant,
            d,
            drive,
            &item,
            (LinkScope::Anonymous, access),
            Vec::new(),
            created,
        );
        if rng.chance(0.5) {
            p.expires = DateTime::from_timestamp(GENERATED_UNTIL + 86_400 * (365 + rng.below(700) as i64), 0);
        }
        p
    } else if kind < 0.55 {
        link_permission(
            tenant,
            d,
            drive,
            &item,
            (LinkScope::Organization, access),
            Vec::new(),
            created,
        )
    } else if kind < 0.75 {
        let mut people = Vec::new();
        if let Some(m) = other_member(tenant, &mut rng, owner) {
            people.push(member_grantee(tenant, m));
        }
        if people.is_empty() || rng.chance(0.5) {
            people.push(guest_grantee(tenant, &random_guest_email(&mut rng)));
        }
        link_permission(tenant, d, drive, &item, (LinkScope::Users, access), people, created)
    } else {
        let who = rng.unit();
        let grantee = match other_member(tenant, &mut rng, owner) {
            Some(m) if who < 0.5 => member_grantee(tenant, m),
            _ if who < 0.75 => guest_grantee(tenant, &random_guest_email(&mut rng)),
            _ => invitee_grantee(&random_guest_email(&mut rng)),
        };
        grant_permission(seed, grantee, access, created)
    };
    vec![permission]
}

/// Overlays of items whose sharing changed at run time, by drive key then item id: their
/// non-owner permissions.
#[derive(Debug, Default)]
pub(crate) struct SharingStore {
    map: Mutex<HashMap<u64, HashMap<String, Vec<SimPermission>>>>,
}

impl SharingStore {
    fn overlay(&self, drive_key: u64, item_id: &str) -> Option<Vec<SimPermission>> {
        let map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(&drive_key)?.get(item_id).cloned()
    }

    fn store(&self, drive_key: u64, item_id: &str, permissions: Vec<SimPermission>) {
        let mut map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(drive_key)
            .or_default()
            .insert(item_id.to_owned(), permissions);
    }
}

/// The non-owner permissions of an item: its overlay when its sharing changed at run time, else
/// its seeded sharing. `tree` is the drive's generated tree when the caller has it at hand.
pub(crate) fn shared_with(
    state: &SimState,
    d: DriveRef,
    drive: &SimDrive,
    item: &SimItem,
    tree: Option<&DriveTree>,
) -> Vec<SimPermission> {
    shared_with_ordinal(state, d, drive, item, tree, None)
}

/// [`shared_with`] for a caller that knows the item's ordinal (a delta round over generated
/// items), which saves decoding its id.
pub(crate) fn shared_with_ordinal(
    state: &SimState,
    d: DriveRef,
    drive: &SimDrive,
    item: &SimItem,
    tree: Option<&DriveTree>,
    ordinal: Option<usize>,
) -> Vec<SimPermission> {
    if let Some(overlay) = state.sharing.overlay(d.key(), &item.id) {
        return overlay;
    }
    if item.is_folder || matches!(d, DriveRef::Site(_)) {
        return Vec::new();
    }
    let Some(ordinal) = ordinal.or_else(|| state.tenant.decode_item_id(d, &item.id)) else {
        return Vec::new();
    };
    match tree {
        Some(tree) => seeded(&state.tenant, d, drive, tree, ordinal),
        None => {
            let tree = state.trees.get(&state.tenant, d);
            seeded(&state.tenant, d, drive, &tree, ordinal)
        }
    }
}

/// Every permission of an item, the owner's first.
pub(crate) fn permissions(state: &SimState, d: DriveRef, drive: &SimDrive, item: &SimItem) -> Vec<SimPermission> {
    let mut all = vec![owner_permission(drive)];
    all.extend(shared_with(state, d, drive, item, None));
    all
}

/// Changes an item's non-owner permissions with `change`; when they differ afterwards, stores
/// them and appends a sharing marker to the drive's change log (delta reports it to clients
/// that asked for sharing changes; the item's eTag and cTag stay as they are). Returns whether
/// anything changed.
pub(crate) fn update(
    state: &SimState,
    d: DriveRef,
    drive: &SimDrive,
    item: &SimItem,
    at: DateTime<Utc>,
    change: impl FnOnce(&mut Vec<SimPermission>),
) -> bool {
    let before = shared_with(state, d, drive, item, None);
    let mut after = before.clone();
    change(&mut after);
    if after == before {
        return false;
    }
    state.sharing.store(d.key(), &item.id, after);
    state.drives.append(
        d.key(),
        Entry::Shared {
            id: item.id.clone(),
            at,
        },
    );
    true
}

/// The `shared` facet of an item with these non-owner permissions
/// (<https://learn.microsoft.com/en-us/graph/api/resources/shared>): the broadest scope, the owner,
/// the earliest grant; `None` when not shared.
pub(crate) fn shared_facet(drive: &SimDrive, shared: &[SimPermission]) -> Option<Value> {
    let scope = shared.iter().map(SimPermission::scope).max_by_key(|s| s.breadth())?;
    let since = shared.iter().map(|p| p.created).min()?;
    let owner_key = if drive.owner_is_group { "group" } else { "user" };
    let mut owner = Map::new();
    owner.insert("id".into(), json!(drive.owner.id));
    owner.insert("displayName".into(), json!(drive.owner.display_name));
    if let Some(email) = &drive.owner.email {
        owner.insert("email".into(), json!(email));
    }
    Some(json!({
        "owner": {owner_key: Value::Object(owner)},
        "scope": scope.as_str(),
        "sharedDateTime": crate::graph::drives::iso(since),
    }))
}

fn identity_json(seed: u64, g: &SimGrantee, deprecated: bool) -> Value {
    let mut out = Map::new();
    if g.site_group {
        out.insert(
            "siteGroup".into(),
            json!({"displayName": g.display_name, "id": g.id, "loginName": g.login_name}),
        );
        return Value::Object(out);
    }
    if let Some(id) = &g.id {
        let mut user = Map::new();
        user.insert("id".into(), json!(id));
        user.insert("displayName".into(), json!(g.display_name));
        if let Some(email) = &g.email {
            user.insert("email".into(), json!(email));
        }
        out.insert("user".into(), Value::Object(user));
    }
    if !deprecated {
        let site_user_id = 7 + siphash24(seed, K_SITE_USER, g.login_name.as_bytes()) % 500;
        let mut site_user = Map::new();
        site_user.insert("id".into(), json!(site_user_id.to_string()));
        site_user.insert("displayName".into(), json!(g.display_name));
        if let Some(email) = &g.email {
            site_user.insert("email".into(), json!(email));
        }
        site_user.insert("loginName".into(), json!(g.login_name));
        out.insert("siteUser".into(), Value::Object(site_user));
    }
    Value::Object(out)
}

/// A permission as Graph renders it on OneDrive for Business.
pub(crate) fn permission_json(seed: u64, p: &SimPermission) -> Value {
    let mut o = Map::new();
    o.insert("id".into(), json!(p.id));
    o.insert("roles".into(), json!(p.roles));
    match &p.link {
        Some(link) => {
            o.insert(
                "link".into(),
                json!({
                    "type": match link.access { AccessLevel::View => "view", AccessLevel::Edit => "edit" },
                    "scope": link.scope.as_str(),
                    "webUrl": link.web_url,
                    "preventsDownload": false,
                }),
            );
            if !p.grantees.is_empty() {
                o.insert(
                    "@deprecated.GrantedToIdentities".into(),
                    json!("GrantedToIdentities has been deprecated. Refer to GrantedToIdentitiesV2"),
                );
                let old: Vec<Value> = p
                    .grantees
                    .iter()
                    .filter(|g| g.id.is_some())
                    .map(|g| identity_json(seed, g, true))
                    .collect();
                o.insert("grantedToIdentities".into(), Value::Array(old));
                let v2: Vec<Value> = p.grantees.iter().map(|g| identity_json(seed, g, false)).collect();
                o.insert("grantedToIdentitiesV2".into(), Value::Array(v2));
            }
        }
        None => {
            if let Some(g) = p.grantees.first() {
                if g.id.is_some() && !g.site_group {
                    o.insert(
                        "@deprecated.GrantedTo".into(),
                        json!("GrantedTo has been deprecated. Refer to GrantedToV2"),
                    );
                    o.insert("grantedTo".into(), identity_json(seed, g, true));
                }
                o.insert("grantedToV2".into(), identity_json(seed, g, false));
            }
        }
    }
    if let Some(email) = &p.invitation {
        o.insert("invitation".into(), json!({"email": email, "signInRequired": true}));
    }
    if let Some(share) = &p.share_id {
        o.insert("shareId".into(), json!(share));
    }
    if let Some(exp) = p.expires {
        o.insert("expirationDateTime".into(), json!(crate::graph::drives::iso(exp)));
    }
    Value::Object(o)
}
