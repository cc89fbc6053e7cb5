//! Directory groups: metadata generated per group, membership described by position ranges and
//! never listed in memory.
//!
//! **Model.** Users are laid out on a *member axis* by a keyed affine bijection of
//! `0..user_count` (position `p` holds user `(a·p + b) mod n`). Each group owns one contiguous
//! range of positions (wrapping around the axis); ranges follow each other along the axis, each
//! overlapping the previous one by [`OVERLAP`] of its size, so groups are mostly disjoint (the
//! benchmark's "1,000 groups ≈ 200,000 distinct users" needs that) while some users sit in two
//! groups, and more once the ranges wrap around a small directory. Only the ranges' start and
//! size are stored (16 bytes per group); "is user `u` a direct member of `g`" inverts the
//! bijection and compares, and a listing walks positions. A group with 5,000 members costs no
//! more memory than one with five.
//!
//! **Kinds.** The first `min(groups, team_sites)` groups are the team sites' Microsoft 365
//! groups (`groupTypes: ["Unified"]`, same id, name and mail as the libraries' owners). The others
//! are Microsoft 365 groups, security groups (`mail: null`, `mailEnabled: false`, as in
//! the security groups of group-list's Example 1), mail-enabled security groups or distribution
//! lists.
//!
//! **Nesting.** A share of the groups (`nested_group_ratio`) also has 1–3 *groups* as members,
//! chosen among the next [`NEST_WINDOW`] groups: a member group always has a higher index, so
//! nesting forms multi-level chains but never a cycle. Microsoft 365 groups neither contain groups
//! nor are contained ("Microsoft 365 groups can't have other groups as members",
//! group-list-transitivemembers.md).
//!
//! **Names.** Generated display names are unique (`{kind prefix}{topic} {facet}`, a round number
//! appended past 1,000 combinations) except on purpose: every [`DUPLICATE_EVERY`]th group repeats
//! the display name of the group before it, as real tenants allow; `mail` and `mailNickname`
//! always stay unique. A few topics carry an apostrophe (`Women's Network`).
//!
//! **Overlay.** Membership changes at run time (`SimControl::add_group_member`, …) are kept per
//! group as small sets of added and removed users, shared by every clone of the tenant, and every
//! listing and ground-truth function applies them.

use std::collections::{BTreeSet, HashMap};
use std::sync::{OnceLock, PoisonError, RwLock};

use chrono::{DateTime, Utc};

use super::names::{GROUP_FACETS, GROUP_TOPICS};
use super::{ITEMS_FROM, K_GROUP, Tenant, USERS_CREATED_FROM, ts};
use crate::SimError;
use crate::config::SimConfig;
use crate::prng::{Rng, hash3, tag, unit};

const K_GROUP_SIZE: u64 = tag(b"group-size");
const K_GROUP_KIND: u64 = tag(b"group-kind");
const K_GROUP_NESTED: u64 = tag(b"group-nested");
const K_GROUP_CHILDREN: u64 = tag(b"group-children");
const K_GROUP_META: u64 = tag(b"group-meta");
const K_MEMBER_ORDER: u64 = tag(b"member-order");

/// One group in 25 (those with `index % 25 == 1`) is large: thousands of members at the
/// benchmark's average of ~200, so listings need several pages.
const LARGE_GROUP_EVERY: u64 = 25;
const LARGE_GROUP_PHASE: u64 = 1;
/// Size of a large group as a multiple of the average: uniform in 6..18 (mean 12).
const LARGE_FACTOR: (f64, f64) = (6.0, 18.0);
/// Size of the other groups as a multiple of the average: uniform in 0.05..1.0333 (mean
/// 0.5417), so the overall mean is the configured average: 0.04 × 12 + 0.96 × 0.5417 = 1.0.
const SMALL_FACTOR: (f64, f64) = (0.05, 1.033_333);
/// Share of a group's range that overlaps the previous group's range (at most the previous
/// group's whole range). Distinct users in groups ≈ `min(users, 0.93 × groups × average)` — not
/// 0.9, because a large group overlaps its smaller predecessor by less than 10 % of its own
/// size: 1,000 groups averaging 215 cover ~200,000 users.
const OVERLAP: f64 = 0.1;
/// A nested group's member groups are chosen among the next 16 groups (keeps chains local and
/// the nesting acyclic: members always have a higher index).
const NEST_WINDOW: u64 = 16;
/// Every 50th group (`index % 50 == 49`) deliberately repeats the previous group's display name.
const DUPLICATE_EVERY: u64 = 50;
/// Stride through the topic × facet combinations (prime, so coprime with their count of 1,000):
/// consecutive groups get unrelated names.
const NAME_STRIDE: u64 = 389;

/// What kind of group it is, which decides `groupTypes`, `mailEnabled` and `securityEnabled`
/// (group resource, the examples of <https://learn.microsoft.com/en-us/graph/api/group-list>).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupKind {
    /// Microsoft 365 group: `groupTypes: ["Unified"]`, mail-enabled, not security-enabled.
    Microsoft365,
    /// Security group: no mail (`mail: null`), security-enabled.
    Security,
    /// Mail-enabled security group: mail and security.
    MailEnabledSecurity,
    /// Distribution list: mail, not security-enabled.
    Distribution,
}

impl GroupKind {
    /// `groupTypes`: `["Unified"]` for Microsoft 365 groups, else empty.
    #[must_use]
    pub fn group_types(self) -> &'static [&'static str] {
        match self {
            Self::Microsoft365 => &["Unified"],
            _ => &[],
        }
    }

    /// `mailEnabled`.
    #[must_use]
    pub fn mail_enabled(self) -> bool {
        !matches!(self, Self::Security)
    }

    /// `securityEnabled`.
    #[must_use]
    pub fn security_enabled(self) -> bool {
        matches!(self, Self::Security | Self::MailEnabledSecurity)
    }

    /// Whether groups of this kind may contain groups or be contained (Microsoft 365 groups
    /// may not).
    #[must_use]
    pub fn nests(self) -> bool {
        !matches!(self, Self::Microsoft365)
    }

    fn prefix(self) -> &'static str {
        match self {
            Self::Microsoft365 => "",
            Self::Security => "SG ",
            Self::MailEnabledSecurity => "MSG ",
            Self::Distribution => "DL ",
        }
    }
}

/// A generated directory group.
#[derive(Debug, Clone, PartialEq)]
pub struct SimGroup {
    /// Position in the directory (`0..group_count`).
    pub index: u64,
    /// Object id (GUID).
    pub id: String,
    /// Display name (not unique on purpose for a few groups, see the module docs).
    pub display_name: String,
    /// Description, or `None` (Graph's `null`).
    pub description: Option<String>,
    /// `mailNickname`, unique.
    pub mail_nickname: String,
    /// Primary SMTP address for mail-enabled kinds; `None` for security groups.
    pub mail: Option<String>,
    /// Kind (decides `groupTypes`, `mailEnabled`, `securityEnabled`).
    pub kind: GroupKind,
    /// `Public`/`Private` for Microsoft 365 groups, else `None`.
    pub visibility: Option<String>,
    /// When the group was created.
    pub created: DateTime<Utc>,
    /// Indexes of the groups that are direct members of this one (always higher indexes).
    pub member_groups: Vec<u64>,
    /// Number of direct user members as generated, before run-time membership changes.
    pub generated_user_count: u64,
}

impl SimGroup {
    /// `groupTypes`.
    #[must_use]
    pub fn group_types(&self) -> Vec<String> {
        self.kind.group_types().iter().map(|s| (*s).to_owned()).collect()
    }
}

/// The keyed bijection of `0..n` placing users on the member axis: position `p` holds user
/// `(a·p + b) mod n`, with `a` coprime with `n`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MemberOrder {
    n: u64,
    a: u64,
    a_inv: u64,
    b: u64,
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The inverse of `a` modulo `n` (`a` coprime with `n`), by the extended Euclidean algorithm.
fn inverse_mod(a: u64, n: u64) -> u64 {
    if n <= 1 {
        return 0;
    }
    let (mut t, mut new_t) = (0i128, 1i128);
    let (mut r, mut new_r) = (i128::from(n), i128::from(a));
    while new_r != 0 {
        let q = r / new_r;
        (t, new_t) = (new_t, t - q * new_t);
        (r, new_r) = (new_r, r - q * new_r);
    }
    u64::try_from(t.rem_euclid(i128::from(n))).unwrap_or(0)
}

fn mul_mod(a: u64, b: u64, n: u64) -> u64 {
    ((u128::from(a) * u128::from(b)) % u128::from(n)) as u64
}

impl MemberOrder {
    fn new(n: u64, key: u64) -> Self {
        if n <= 1 {
            return Self {
                n,
                a: 1,
                a_inv: 1,
                b: 0,
            };
        }
        let mut a = (key % n) | 1;
        while gcd(a, n) != 1 {
            a = (a + 2) % n;
            if a == 0 {
                a = 1;
            }
        }
        let b = hash3(key, K_MEMBER_ORDER, 1) % n;
        Self {
            n,
            a,
            a_inv: inverse_mod(a, n),
            b,
        }
    }

    /// The user index at position `p` (`p < n`).
    pub(crate) fn user(&self, p: u64) -> u64 {
        if self.n <= 1 {
            return 0;
        }
        (mul_mod(self.a, p, self.n) + self.b) % self.n
    }

    /// The position of user `u` (`u < n`).
    pub(crate) fn position(&self, u: u64) -> u64 {
        if self.n <= 1 {
            return 0;
        }
        mul_mod(self.a_inv, (u + self.n - self.b) % self.n, self.n)
    }
}

/// Run-time membership changes of one group.
#[derive(Debug, Default, Clone)]
struct Delta {
    /// Users made direct members who were not in the generated range.
    added: BTreeSet<u64>,
    /// Users of the generated range who were removed.
    removed: BTreeSet<u64>,
}

/// Lower-cased display names and mail addresses to group indexes, built on first lookup.
#[derive(Debug, Default)]
struct NameIndex {
    by_name: HashMap<String, Vec<u64>>,
    by_mail: HashMap<String, u64>,
}

/// The group layout of a tenant: O(groups) metadata and the membership overlay.
#[derive(Debug)]
pub(crate) struct Groups {
    count: u64,
    /// Groups that are team-site Microsoft 365 groups: `0..team_groups`.
    team_groups: u64,
    nested_ratio: f64,
    /// `(start, size)` of each group's generated range on the member axis; `start` grows along
    /// the axis and is taken modulo the user count when used.
    ranges: Vec<(u64, u64)>,
    order: MemberOrder,
    index: OnceLock<NameIndex>,
    overlay: RwLock<HashMap<u64, Delta>>,
}

fn generated_size(seed: u64, g: u64, avg: u64, n: u64) -> u64 {
    let u = unit(hash3(seed, K_GROUP_SIZE, g));
    let (lo, hi) = if g % LARGE_GROUP_EVERY == LARGE_GROUP_PHASE {
        LARGE_FACTOR
    } else {
        SMALL_FACTOR
    };
    let size = (avg as f64 * (lo + u * (hi - lo))).round() as u64;
    size.min(n)
}

impl Groups {
    pub(crate) fn new(config: &SimConfig) -> Self {
        let (seed, n, count) = (config.seed, config.users, config.groups);
        let mut ranges = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        let (mut end, mut prev_size) = (0u64, 0u64);
        for g in 0..count {
            let size = generated_size(seed, g, config.group_members_avg, n);
            let overlap = ((size as f64 * OVERLAP) as u64).min(prev_size);
            let start = end - overlap;
            ranges.push((start, size));
            end = start + size;
            prev_size = size;
        }
        Self {
            count,
            team_groups: count.min(u64::from(config.team_sites)),
            nested_ratio: config.nested_group_ratio,
            ranges,
            order: MemberOrder::new(n, hash3(seed, K_MEMBER_ORDER, 0)),
            index: OnceLock::new(),
            overlay: RwLock::new(HashMap::new()),
        }
    }

    /// The group's generated range as one or two non-wrapping position intervals `[lo, hi)`.
    fn pieces(&self, g: u64) -> Vec<(u64, u64)> {
        let n = self.order.n;
        let Some(&(start, size)) = self.ranges.get(usize::try_from(g).unwrap_or(usize::MAX)) else {
            return Vec::new();
        };
        if size == 0 || n == 0 {
            return Vec::new();
        }
        if size >= n {
            return vec![(0, n)];
        }
        let s = start % n;
        if s + size <= n {
            vec![(s, s + size)]
        } else {
            vec![(s, n), (0, s + size - n)]
        }
    }

    fn in_range(&self, g: u64, user: u64) -> bool {
        let p = self.order.position(user);
        self.pieces(g).iter().any(|&(lo, hi)| lo <= p && p < hi)
    }

    fn overlay(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u64, Delta>> {
        self.overlay.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `user` is a direct member of `g`, the overlay applied.
    fn is_direct(&self, overlay: &HashMap<u64, Delta>, g: u64, user: u64) -> bool {
        let delta = overlay.get(&g);
        if self.in_range(g, user) {
            !delta.is_some_and(|d| d.removed.contains(&user))
        } else {
            delta.is_some_and(|d| d.added.contains(&user))
        }
    }
}

/// Where a walk over a [`MemberSet`] stands: positions on the member axis first, then users
/// added at run time (by user index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UserCursor {
    /// The next position to look at.
    Position(u64),
    /// The smallest added user index not yet looked at.
    Added(u64),
}

impl UserCursor {
    /// The start of a walk.
    pub(crate) const START: Self = Self::Position(0);
}

/// The users of a set of groups (their direct members, overlay applied, each user once),
/// described by position intervals rather than listed.
#[derive(Debug, Clone)]
pub(crate) struct MemberSet {
    order: MemberOrder,
    /// `[lo, hi)` position intervals of each group's range, with the group.
    pieces: Vec<(u64, u64, u64)>,
    /// The union of `pieces`, sorted and disjoint.
    merged: Vec<(u64, u64)>,
    /// Removed users per group of the set (only groups with removals).
    removed: HashMap<u64, BTreeSet<u64>>,
    /// Every user removed from some group of the set.
    removed_any: BTreeSet<u64>,
    /// Every user added to some group of the set.
    added: BTreeSet<u64>,
}

impl MemberSet {
    fn new(groups: &Groups, members_of: &[u64]) -> Self {
        let mut pieces: Vec<(u64, u64, u64)> = members_of
            .iter()
            .flat_map(|&g| groups.pieces(g).into_iter().map(move |(lo, hi)| (lo, hi, g)))
            .collect();
        pieces.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for &(lo, hi, _) in &pieces {
            match merged.last_mut() {
                Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        let overlay = groups.overlay();
        let mut removed = HashMap::new();
        let (mut removed_any, mut added) = (BTreeSet::new(), BTreeSet::new());
        for g in members_of {
            if let Some(delta) = overlay.get(g) {
                added.extend(delta.added.iter().copied());
                removed_any.extend(delta.removed.iter().copied());
                if !delta.removed.is_empty() {
                    removed.insert(*g, delta.removed.clone());
                }
            }
        }
        Self {
            order: groups.order,
            pieces,
            merged,
            removed,
            removed_any,
            added,
        }
    }

    fn in_merged(&self, p: u64) -> bool {
        let i = self.merged.partition_point(|&(_, hi)| hi <= p);
        self.merged.get(i).is_some_and(|&(lo, _)| lo <= p)
    }

    /// Whether position `p`, known to lie in `merged`, holds a member: some group's range holds
    /// it and that group did not remove its user.
    fn covered_in_merged(&self, p: u64) -> bool {
        let user = self.order.user(p);
        if !self.removed_any.contains(&user) {
            return true;
        }
        self.pieces
            .iter()
            .any(|&(lo, hi, g)| lo <= p && p < hi && !self.removed.get(&g).is_some_and(|r| r.contains(&user)))
    }

    fn covered(&self, p: u64) -> bool {
        self.in_merged(p) && self.covered_in_merged(p)
    }

    /// The members from `cursor` on, each with the cursor that designates it.
    pub(crate) fn walk(&self, cursor: UserCursor) -> MemberWalk<'_> {
        let interval = match cursor {
            UserCursor::Position(p) => self.merged.partition_point(|&(_, hi)| hi <= p),
            UserCursor::Added(_) => self.merged.len(),
        };
        MemberWalk {
            set: self,
            cursor,
            interval,
        }
    }

    /// How many members: O(intervals + overlay), no walk.
    pub(crate) fn count(&self) -> u64 {
        let mut total: u64 = self.merged.iter().map(|(lo, hi)| hi - lo).sum();
        for &user in &self.removed_any {
            let p = self.order.position(user);
            if self.in_merged(p) && !self.covered_in_merged(p) {
                total -= 1;
            }
        }
        for &user in &self.added {
            if !self.covered(self.order.position(user)) {
                total += 1;
            }
        }
        total
    }
}

/// Iterator of [`MemberSet::walk`]: `(cursor of the member, user index)`.
#[derive(Debug)]
pub(crate) struct MemberWalk<'a> {
    set: &'a MemberSet,
    cursor: UserCursor,
    interval: usize,
}

impl Iterator for MemberWalk<'_> {
    type Item = (UserCursor, u64);

    fn next(&mut self) -> Option<Self::Item> {
        let set = self.set;
        loop {
            match self.cursor {
                UserCursor::Position(p) => {
                    while set.merged.get(self.interval).is_some_and(|&(_, hi)| hi <= p) {
                        self.interval += 1;
                    }
                    let Some(&(lo, _)) = set.merged.get(self.interval) else {
                        self.cursor = UserCursor::Added(0);
                        continue;
                    };
                    let p = p.max(lo);
                    self.cursor = UserCursor::Position(p + 1);
                    if set.covered_in_merged(p) {
                        return Some((UserCursor::Position(p), set.order.user(p)));
                    }
                }
                UserCursor::Added(u) => {
                    let user = *set.added.range(u..).next()?;
                    self.cursor = UserCursor::Added(user + 1);
                    if !set.covered(set.order.position(user)) {
                        return Some((UserCursor::Added(user), user));
                    }
                }
            }
        }
    }
}

impl Tenant {
    fn groups_layout(&self) -> &Groups {
        &self.inner.groups
    }

    /// Number of groups.
    #[must_use]
    pub fn group_count(&self) -> u64 {
        self.groups_layout().count
    }

    fn group_kind(&self, g: u64) -> GroupKind {
        let layout = self.groups_layout();
        if g < layout.team_groups {
            return GroupKind::Microsoft365;
        }
        let u = unit(hash3(self.seed(), K_GROUP_KIND, g));
        if self.group_is_nested(g) {
            match u {
                u if u < 0.6 => GroupKind::Security,
                u if u < 0.8 => GroupKind::MailEnabledSecurity,
                _ => GroupKind::Distribution,
            }
        } else {
            match u {
                u if u < 0.45 => GroupKind::Microsoft365,
                u if u < 0.75 => GroupKind::Security,
                u if u < 0.85 => GroupKind::MailEnabledSecurity,
                _ => GroupKind::Distribution,
            }
        }
    }

    fn group_is_nested(&self, g: u64) -> bool {
        let layout = self.groups_layout();
        g >= layout.team_groups && g < layout.count && unit(hash3(self.seed(), K_GROUP_NESTED, g)) < layout.nested_ratio
    }

    /// The direct member groups of `g`: 1–3 nestable groups among the next [`NEST_WINDOW`].
    fn member_group_indexes(&self, g: u64) -> Vec<u64> {
        if !self.group_is_nested(g) {
            return Vec::new();
        }
        let end = g.saturating_add(1 + NEST_WINDOW).min(self.group_count());
        let mut candidates: Vec<u64> = (g + 1..end).filter(|&h| self.group_kind(h).nests()).collect();
        let mut r = Rng::new(hash3(self.seed(), K_GROUP_CHILDREN, g));
        let want = r.range(1, 3) as usize;
        let mut picked = Vec::with_capacity(want);
        while picked.len() < want && !candidates.is_empty() {
            let i = r.below(candidates.len() as u64) as usize;
            picked.push(candidates.swap_remove(i));
        }
        picked.sort_unstable();
        picked
    }

    /// `(display name, mail nickname)` of group `g`.
    fn group_names(&self, g: u64) -> (String, String) {
        let team = self.groups_layout().team_groups;
        if g < team {
            let (display, url_name) = self.team_site(u32::try_from(g).unwrap_or(u32::MAX));
            return (display, url_name);
        }
        if g % DUPLICATE_EVERY == DUPLICATE_EVERY - 1 && g > team {
            let (display, nickname) = self.generated_group_name(g - 1);
            return (display, format!("{nickname}-{g}"));
        }
        self.generated_group_name(g)
    }

    fn generated_group_name(&self, g: u64) -> (String, String) {
        let k = g - self.groups_layout().team_groups;
        let facets = GROUP_FACETS.len() as u64;
        let combos = GROUP_TOPICS.len() as u64 * facets;
        let c = (k % combos) * NAME_STRIDE % combos;
        let round = k / combos;
        let mut display = format!(
            "{}{} {}",
            self.group_kind(g).prefix(),
            GROUP_TOPICS[(c / facets) as usize],
            GROUP_FACETS[(c % facets) as usize]
        );
        if round > 0 {
            display.push_str(&format!(" {}", round + 1));
        }
        let nickname: String = display
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase();
        (display, nickname)
    }

    /// The group at `index`, or `None` past [`Self::group_count`].
    #[must_use]
    pub fn group(&self, index: u64) -> Option<SimGroup> {
        let layout = self.groups_layout();
        if index >= layout.count {
            return None;
        }
        let kind = self.group_kind(index);
        let (display_name, mail_nickname) = self.group_names(index);
        let mail = kind
            .mail_enabled()
            .then(|| format!("{}@{}", mail_nickname.to_ascii_lowercase(), self.domain()));
        let mut r = Rng::new(hash3(self.seed(), K_GROUP_META, index));
        let description = r.chance(0.7).then(|| format!("Members of {display_name}"));
        let visibility =
            (kind == GroupKind::Microsoft365).then(|| if r.chance(0.7) { "Public" } else { "Private" }.to_owned());
        let created = ts(r.range(USERS_CREATED_FROM as u64, ITEMS_FROM as u64) as i64);
        let generated_user_count = layout
            .ranges
            .get(usize::try_from(index).unwrap_or(usize::MAX))
            .map_or(0, |r| r.1);
        Some(SimGroup {
            index,
            id: self.keyed_guid(K_GROUP, index),
            display_name,
            description,
            mail_nickname,
            mail,
            kind,
            visibility,
            created,
            member_groups: self.member_group_indexes(index),
            generated_user_count,
        })
    }

    /// All groups, generated lazily in directory order.
    pub fn groups(&self) -> impl Iterator<Item = SimGroup> + '_ {
        (0..self.group_count()).filter_map(|g| self.group(g))
    }

    /// The index of the group with this object id (any case).
    pub(crate) fn group_index(&self, id: &str) -> Option<u64> {
        self.decode_keyed_guid(K_GROUP, id).filter(|g| *g < self.group_count())
    }

    /// The group with this object id (any case).
    #[must_use]
    pub fn find_group(&self, id: &str) -> Option<SimGroup> {
        self.group_index(id).and_then(|g| self.group(g))
    }

    fn name_index(&self) -> &NameIndex {
        self.groups_layout().index.get_or_init(|| {
            let mut index = NameIndex::default();
            for g in 0..self.group_count() {
                let (display, nickname) = self.group_names(g);
                index.by_name.entry(display.to_lowercase()).or_default().push(g);
                if self.group_kind(g).mail_enabled() {
                    let mail = format!("{}@{}", nickname.to_ascii_lowercase(), self.domain());
                    index.by_mail.entry(mail).or_insert(g);
                }
            }
            index
        })
    }

    /// Indexes of the groups whose display name equals `name`, ignoring case, ascending.
    pub(crate) fn group_indexes_by_display_name(&self, name: &str) -> Vec<u64> {
        self.name_index()
            .by_name
            .get(&name.to_lowercase())
            .cloned()
            .unwrap_or_default()
    }

    /// Index of the group with this mail address, ignoring case.
    pub(crate) fn group_index_by_mail(&self, mail: &str) -> Option<u64> {
        self.name_index().by_mail.get(&mail.to_lowercase()).copied()
    }

    /// The groups whose display name equals `name`, ignoring case (several on purpose for some
    /// names, see the module docs).
    #[must_use]
    pub fn groups_by_display_name(&self, name: &str) -> Vec<SimGroup> {
        self.group_indexes_by_display_name(name)
            .into_iter()
            .filter_map(|g| self.group(g))
            .collect()
    }

    /// The group with this mail address, ignoring case.
    #[must_use]
    pub fn group_by_mail(&self, mail: &str) -> Option<SimGroup> {
        self.group_index_by_mail(mail).and_then(|g| self.group(g))
    }

    /// Indexes of every group nested below `g`, at any depth, ascending (`g` excluded).
    pub(crate) fn transitive_group_indexes(&self, g: u64) -> Vec<u64> {
        let mut seen = BTreeSet::new();
        let mut stack = self.member_group_indexes(g);
        while let Some(h) = stack.pop() {
            if seen.insert(h) {
                stack.extend(self.member_group_indexes(h));
            }
        }
        seen.into_iter().collect()
    }

    /// The user members of `g`: direct ones, or with those of every nested group.
    pub(crate) fn member_set(&self, g: u64, transitive: bool) -> MemberSet {
        let mut of = vec![g];
        if transitive {
            of.extend(self.transitive_group_indexes(g));
        }
        MemberSet::new(self.groups_layout(), &of)
    }

    fn user_ids_of(&self, set: &MemberSet) -> BTreeSet<String> {
        set.walk(UserCursor::START).map(|(_, u)| self.user(u).id).collect()
    }

    /// Ids of the groups that are direct members of the group `group_id` (empty for an unknown
    /// id).
    #[must_use]
    pub fn member_group_ids(&self, group_id: &str) -> Vec<String> {
        self.group_index(group_id)
            .map(|g| self.member_group_indexes(g))
            .unwrap_or_default()
            .into_iter()
            .map(|h| self.keyed_guid(K_GROUP, h))
            .collect()
    }

    /// Ids of every group nested below `group_id`, at any depth (empty for an unknown id).
    #[must_use]
    pub fn transitive_group_ids(&self, group_id: &str) -> Vec<String> {
        self.group_index(group_id)
            .map(|g| self.transitive_group_indexes(g))
            .unwrap_or_default()
            .into_iter()
            .map(|h| self.keyed_guid(K_GROUP, h))
            .collect()
    }

    /// Ids of the group's direct user members, run-time changes applied (empty for an unknown
    /// id). Materialises the ids: for tests.
    #[must_use]
    pub fn direct_user_ids(&self, group_id: &str) -> BTreeSet<String> {
        self.group_index(group_id)
            .map(|g| self.user_ids_of(&self.member_set(g, false)))
            .unwrap_or_default()
    }

    /// Ids of the group's users including those of nested groups at any depth, each once,
    /// run-time changes applied (empty for an unknown id). Materialises the ids: for tests.
    #[must_use]
    pub fn transitive_user_ids(&self, group_id: &str) -> BTreeSet<String> {
        self.group_index(group_id)
            .map(|g| self.user_ids_of(&self.member_set(g, true)))
            .unwrap_or_default()
    }

    /// How many users [`Self::transitive_user_ids`] holds, computed without listing them.
    #[must_use]
    pub fn transitive_user_count(&self, group_id: &str) -> u64 {
        self.group_index(group_id)
            .map_or(0, |g| self.member_set(g, true).count())
    }

    /// How many distinct users are members of at least one group (O(groups), no listing).
    #[must_use]
    pub fn grouped_user_count(&self) -> u64 {
        let all: Vec<u64> = (0..self.group_count()).collect();
        MemberSet::new(self.groups_layout(), &all).count()
    }

    fn membership_target(&self, group_id: &str, user: &str) -> Result<(u64, u64), SimError> {
        let g = self
            .group_index(group_id)
            .ok_or_else(|| SimError::UnknownGroup(group_id.to_owned()))?;
        let u = self
            .find_user(user)
            .ok_or_else(|| SimError::UnknownUser(user.to_owned()))?;
        Ok((g, u.index))
    }

    /// Makes `user` (id or UPN) a direct member of the group. Fails if either is unknown or the
    /// user already is a direct member.
    pub(crate) fn add_group_member(&self, group_id: &str, user: &str) -> Result<(), SimError> {
        let (g, u) = self.membership_target(group_id, user)?;
        let layout = self.groups_layout();
        let in_range = layout.in_range(g, u);
        let mut overlay = layout.overlay.write().unwrap_or_else(PoisonError::into_inner);
        let delta = overlay.entry(g).or_default();
        let changed = if in_range {
            delta.removed.remove(&u)
        } else {
            delta.added.insert(u)
        };
        if changed {
            Ok(())
        } else {
            Err(SimError::AlreadyMember {
                group: group_id.to_owned(),
                user: user.to_owned(),
            })
        }
    }

    /// Removes `user` (id or UPN) from the group's direct members. Fails if either is unknown,
    /// or if the user is not a direct member — naming the nested groups it belongs through,
    /// if any (such a membership can only be changed in those groups).
    pub(crate) fn remove_group_member(&self, group_id: &str, user: &str) -> Result<(), SimError> {
        let (g, u) = self.membership_target(group_id, user)?;
        let layout = self.groups_layout();
        let in_range = layout.in_range(g, u);
        let changed = {
            let mut overlay = layout.overlay.write().unwrap_or_else(PoisonError::into_inner);
            let delta = overlay.entry(g).or_default();
            if in_range {
                delta.removed.insert(u)
            } else {
                delta.added.remove(&u)
            }
        };
        if changed {
            return Ok(());
        }
        let overlay = layout.overlay();
        let via: Vec<String> = self
            .transitive_group_indexes(g)
            .into_iter()
            .filter(|&h| layout.is_direct(&overlay, h, u))
            .map(|h| self.keyed_guid(K_GROUP, h))
            .collect();
        let (group, user) = (group_id.to_owned(), user.to_owned());
        if via.is_empty() {
            Err(SimError::NotMember { group, user })
        } else {
            Err(SimError::IndirectMember { group, user, via })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn tenant(users: u64, groups: u64, avg: u64, nested: f64) -> Tenant {
        Tenant::new(&SimConfig {
            users,
            groups,
            group_members_avg: avg,
            nested_group_ratio: nested,
            ..SimConfig::with_seed(11)
        })
    }

    /// Every member of `g` by brute force over all users: the definition the walk must match.
    fn brute_force(t: &Tenant, g: u64, transitive: bool) -> BTreeSet<u64> {
        let layout = t.groups_layout();
        let overlay = layout.overlay();
        let mut of = vec![g];
        if transitive {
            of.extend(t.transitive_group_indexes(g));
        }
        (0..t.user_count())
            .filter(|&u| of.iter().any(|&h| layout.is_direct(&overlay, h, u)))
            .collect()
    }

    #[test]
    fn member_order_is_a_bijection_for_awkward_sizes() {
        for n in [1u64, 2, 3, 10, 97, 1000, 4096] {
            let order = MemberOrder::new(n, 12345);
            let users: HashSet<u64> = (0..n).map(|p| order.user(p)).collect();
            assert_eq!(users.len() as u64, n, "n = {n}");
            for p in 0..n {
                assert_eq!(order.position(order.user(p)), p, "n = {n}, p = {p}");
            }
        }
    }

    #[test]
    fn walks_and_counts_equal_brute_force_with_and_without_overlay() {
        let t = tenant(3_000, 60, 120, 0.4);
        for g in 0..60 {
            for transitive in [false, true] {
                let set = t.member_set(g, transitive);
                let walked: Vec<u64> = set.walk(UserCursor::START).map(|(_, u)| u).collect();
                let unique: BTreeSet<u64> = walked.iter().copied().collect();
                assert_eq!(unique.len(), walked.len(), "each member once");
                assert_eq!(unique, brute_force(&t, g, transitive), "group {g}");
                assert_eq!(set.count(), walked.len() as u64);
            }
        }
        // Overlay: remove a generated member, add an outsider, then check again.
        let g = (0..60)
            .find(|&g| !t.member_group_indexes(g).is_empty())
            .expect("a nested group");
        let group_id = t.keyed_guid(K_GROUP, g);
        let member = *brute_force(&t, g, false).iter().next().expect("a member");
        let outsider = (0..t.user_count())
            .find(|u| !brute_force(&t, g, true).contains(u))
            .expect("an outsider");
        t.remove_group_member(&group_id, &t.user(member).id).expect("removed");
        t.add_group_member(&group_id, &t.user(outsider).user_principal_name)
            .expect("added");
        for transitive in [false, true] {
            let set = t.member_set(g, transitive);
            let walked: BTreeSet<u64> = set.walk(UserCursor::START).map(|(_, u)| u).collect();
            assert_eq!(walked, brute_force(&t, g, transitive));
            assert_eq!(set.count(), walked.len() as u64);
            assert!(walked.contains(&outsider));
        }
        assert!(!brute_force(&t, g, false).contains(&member));
    }

    #[test]
    fn walk_resumes_from_any_cursor() {
        let t = tenant(2_000, 10, 300, 0.5);
        let set = t.member_set(1, true);
        let all: Vec<(UserCursor, u64)> = set.walk(UserCursor::START).collect();
        for cut in [0, 1, 17, all.len() / 2, all.len() - 1] {
            let rest: Vec<u64> = set.walk(all[cut].0).map(|(_, u)| u).collect();
            let expected: Vec<u64> = all[cut..].iter().map(|(_, u)| *u).collect();
            assert_eq!(rest, expected, "cut {cut}");
        }
    }

    #[test]
    fn nesting_is_acyclic_multi_level_and_never_involves_microsoft_365_groups() {
        let t = tenant(5_000, 400, 50, 0.3);
        let mut deepest = 0;
        for g in t.groups() {
            for &h in &g.member_groups {
                assert!(h > g.index, "members have higher indexes");
                assert!(t.group_kind(h).nests() && g.kind.nests());
            }
            let depth = depth(&t, g.index);
            deepest = deepest.max(depth);
        }
        assert!(deepest >= 2, "some nesting is at least two levels deep");
        let nested = t.groups().filter(|g| !g.member_groups.is_empty()).count();
        assert!((80..=160).contains(&nested), "about 30 % nested: {nested}");
    }

    fn depth(t: &Tenant, g: u64) -> usize {
        t.member_group_indexes(g)
            .into_iter()
            .map(|h| 1 + depth(t, h))
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn ids_names_and_mails_resolve_and_mails_are_unique() {
        let t = tenant(1_000, 5_000, 10, 0.2);
        let mut mails = HashSet::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        for g in t.groups() {
            assert_eq!(t.find_group(&g.id).map(|x| x.index), Some(g.index));
            assert_eq!(t.find_group(&g.id.to_uppercase()).map(|x| x.index), Some(g.index));
            match &g.mail {
                Some(mail) => {
                    assert!(mails.insert(mail.clone()), "duplicate mail {mail}");
                    assert_eq!(t.group_by_mail(&mail.to_uppercase()).map(|x| x.index), Some(g.index));
                    assert!(g.kind.mail_enabled());
                }
                None => assert_eq!(g.kind, GroupKind::Security),
            }
            *names.entry(g.display_name.to_lowercase()).or_default() += 1;
        }
        let duplicated = names.values().filter(|n| **n > 1).count();
        assert_eq!(
            duplicated, 100,
            "exactly the deliberate duplicates (every 50th of 5,000)"
        );
        assert!(names.keys().any(|n| n.contains('\'')), "some names carry an apostrophe");
        let dup = t.group(49).expect("group 49");
        assert_eq!(t.groups_by_display_name(&dup.display_name).len(), 2);
        assert!(t.find_group("00000000-0000-4000-8000-000000000000").is_none());
    }

    #[test]
    fn team_site_groups_are_the_libraries_owners() {
        let t = tenant(100, 10, 20, 0.2);
        for drive in t.team_site_drives() {
            let group = t.find_group(&drive.owner.id).expect("the owner is a group");
            assert_eq!(group.display_name, drive.owner.display_name);
            assert_eq!(group.mail, drive.owner.email);
            assert_eq!(group.kind, GroupKind::Microsoft365);
        }
    }

    #[test]
    fn benchmark_layout_covers_about_200k_distinct_users_with_large_groups() {
        let t = tenant(250_000, 1_000, 222, 0.1);
        let distinct = t.grouped_user_count();
        assert!((185_000..=215_000).contains(&distinct), "distinct users {distinct}");
        let largest = t.groups().map(|g| g.generated_user_count).max().unwrap_or(0);
        assert!(largest >= 2_000, "largest group {largest}");
        let mean = t.groups().map(|g| g.generated_user_count).sum::<u64>() / 1_000;
        assert!((190..=255).contains(&mean), "mean size {mean}");
    }

    #[test]
    fn removing_an_indirect_member_names_the_nested_group() {
        let t = tenant(2_000, 100, 40, 0.5);
        let (g, h) = (0..100)
            .find_map(|g| t.member_group_indexes(g).first().map(|h| (g, *h)))
            .expect("a nested group");
        let direct_of_g = brute_force(&t, g, false);
        let u = *brute_force(&t, h, false)
            .iter()
            .find(|u| !direct_of_g.contains(u))
            .expect("a member of the nested group only");
        let (gid, hid, uid) = (t.keyed_guid(K_GROUP, g), t.keyed_guid(K_GROUP, h), t.user(u).id);
        match t.remove_group_member(&gid, &uid) {
            Err(SimError::IndirectMember { via, .. }) => assert!(via.contains(&hid)),
            other => panic!("expected IndirectMember, got {other:?}"),
        }
        assert!(matches!(
            t.add_group_member(&hid, &uid),
            Err(SimError::AlreadyMember { .. })
        ));
        assert!(matches!(
            t.remove_group_member(&gid, "nobody@contoso.onmicrosoft.com"),
            Err(SimError::UnknownUser(_))
        ));
    }
}
