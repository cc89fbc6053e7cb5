//! Deterministic folder trees of drives.
//!
//! A drive's tree is regenerated from `(seed, drive)` whenever it is needed (cheap: a few hundred
//! nanoseconds per item) and never stored. Items are numbered by *ordinal* in creation order:
//! 0 is the root, then the folders, then the files. A parent always has a smaller ordinal than
//! its children, and item ids encode the ordinal.

use std::collections::HashSet;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::names::{EXTENSIONS, FILE_STEMS, FILE_SUFFIXES, SUB_FOLDERS, SizeClass, TOP_FOLDERS};
use super::{DriveRef, GENERATED_UNTIL, ITEMS_FROM, SimDrive, SimIdentity, SimItem, Tenant, ts};
use crate::config::FilesPerDrive;
use crate::prng::{Perm, Rng, base32_decode, base32_encode, guid, hash3, hash4, tag};

const K_TREE: u64 = tag(b"tree");
const K_FILE_COUNT: u64 = tag(b"file-count");
const K_ITEM_PERM: u64 = tag(b"item-perm");
const K_ITEM_CHECK: u64 = tag(b"item-check");
const K_ETAG: u64 = tag(b"etag");
const K_QUICK_XOR: u64 = tag(b"quick-xor");

/// Deepest folder level generated (top-level folders are depth 1), so files sit at most 5 deep.
const MAX_FOLDER_DEPTH: u8 = 4;

/// Marks "created by the drive's owner" in [`Node::creator`] / [`Node::modifier`].
const OWNER: u64 = u64::MAX;

/// Characters kept as-is in item web URLs; everything else is percent-encoded (SharePoint
/// encodes spaces as `%20`).
const URL_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// One generated item.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) parent: u32,
    pub(crate) is_folder: bool,
    pub(crate) depth: u8,
    pub(crate) name: String,
    pub(crate) size: u64,
    pub(crate) child_count: u32,
    pub(crate) created: i64,
    pub(crate) modified: i64,
    creator: u64,
    modifier: u64,
    ext: Option<u8>,
    version: u32,
}

/// The generated tree of one drive: nodes by ordinal plus the depth-first order.
#[derive(Debug, Clone)]
pub(crate) struct DriveTree {
    drive: DriveRef,
    nodes: Vec<Node>,
    order: Vec<u32>,
}

fn file_count(tenant: &Tenant, drive: DriveRef) -> u64 {
    match tenant.files_per_drive() {
        FilesPerDrive::Fixed(n) => n,
        FilesPerDrive::Range { min, max } => Rng::new(hash3(tenant.seed(), K_FILE_COUNT, drive.key())).range(min, max),
    }
}

fn file_size(rng: &mut Rng, class: SizeClass) -> u64 {
    if rng.chance(0.01) {
        return 0; // empty files exist in real drives
    }
    match class {
        SizeClass::Tiny => rng.range(16, 65_536),
        SizeClass::Office if rng.chance(0.85) => rng.range(12_000, 400_000),
        SizeClass::Office => rng.range(400_000, 8_000_000),
        SizeClass::Media if rng.chance(0.85) => rng.range(40_000, 2_500_000),
        SizeClass::Media => rng.range(2_500_000, 40_000_000),
        SizeClass::Large if rng.chance(0.9) => rng.range(1_000_000, 50_000_000),
        SizeClass::Large => rng.range(50_000_000, 700_000_000),
    }
}

/// Inserts a name unique (case-insensitively, as OneDrive requires) among the parent's children,
/// appending ` (2)`, ` (3)`… before the extension on collision.
fn unique_name(taken: &mut HashSet<(u32, String)>, parent: u32, stem: &str, ext: Option<&str>) -> String {
    let join = |stem: &str| match ext {
        Some(e) => format!("{stem}.{e}"),
        None => stem.to_owned(),
    };
    let mut name = join(stem);
    let mut n = 1;
    while !taken.insert((parent, name.to_lowercase())) {
        n += 1;
        name = join(&format!("{stem} ({n})"));
    }
    name
}

impl DriveTree {
    /// Generates the tree of `drive`. O(items) time and memory, nothing cached.
    pub(crate) fn build(tenant: &Tenant, drive: DriveRef) -> Self {
        let seed = tenant.seed();
        let key = drive.key();
        let mut rng = Rng::new(hash3(seed, K_TREE, key));
        let n_files = file_count(tenant, drive);
        let n_folders = if n_files == 0 {
            0
        } else {
            rng.range(n_files / 12, n_files / 4 + 1)
        };
        let users = tenant.generated_users();
        let owner_share = match drive {
            DriveRef::User(_) => 0.85,
            DriveRef::Site(_) => 0.0,
        };
        let pick_person = |rng: &mut Rng| {
            if users == 0 || rng.chance(owner_share) {
                OWNER
            } else {
                rng.below(users)
            }
        };

        let mut nodes = Vec::with_capacity((1 + n_folders + n_files) as usize);
        let mut taken = HashSet::with_capacity((n_folders + n_files) as usize);
        let drive_created = ITEMS_FROM - 86_400 * 30;
        nodes.push(Node {
            parent: u32::MAX,
            is_folder: true,
            depth: 0,
            name: "root".to_owned(),
            size: 0,
            child_count: 0,
            created: drive_created,
            modified: GENERATED_UNTIL - 3600,
            creator: OWNER,
            modifier: OWNER,
            ext: None,
            version: 1,
        });

        for f in 1..=n_folders as u32 {
            // A random earlier folder that still has room below it, else the root.
            let mut parent = 0u32;
            if f > 1 && !rng.chance(0.4) {
                for _ in 0..3 {
                    let cand = 1 + rng.below(u64::from(f - 1)) as u32;
                    if nodes[cand as usize].depth < MAX_FOLDER_DEPTH {
                        parent = cand;
                        break;
                    }
                }
            }
            let depth = nodes[parent as usize].depth + 1;
            let base = if depth == 1 {
                *rng.pick(TOP_FOLDERS)
            } else {
                *rng.pick(SUB_FOLDERS)
            };
            let name = unique_name(&mut taken, parent, base, None);
            let created = rng.range(ITEMS_FROM as u64, (GENERATED_UNTIL - 86_400 * 60) as u64) as i64;
            let modified = created + rng.below((GENERATED_UNTIL - created) as u64) as i64;
            let creator = pick_person(&mut rng);
            nodes.push(Node {
                parent,
                is_folder: true,
                depth,
                name,
                size: 0,
                child_count: 0,
                created,
                modified,
                creator,
                modifier: creator,
                ext: None,
                version: 1 + rng.below(3) as u32,
            });
        }

        for _ in 0..n_files {
            let parent = if n_folders == 0 || rng.chance(0.2) {
                0
            } else {
                1 + rng.below(n_folders) as u32
            };
            let ext_pos = rng.pick_weighted(EXTENSIONS, |e| e.2);
            let (ext, _, _, class) = EXTENSIONS[ext_pos];
            let stem = format!("{}{}", rng.pick(FILE_STEMS), rng.pick(FILE_SUFFIXES));
            let name = unique_name(&mut taken, parent, &stem, Some(ext));
            let size = file_size(&mut rng, class);
            let created = rng.range(ITEMS_FROM as u64, (GENERATED_UNTIL - 86_400) as u64) as i64;
            let modified = if rng.chance(0.3) {
                created
            } else {
                created + rng.below((GENERATED_UNTIL - created) as u64) as i64
            };
            let creator = pick_person(&mut rng);
            let modifier = if rng.chance(0.7) {
                creator
            } else {
                pick_person(&mut rng)
            };
            nodes.push(Node {
                parent,
                is_folder: false,
                depth: nodes[parent as usize].depth + 1,
                name,
                size,
                child_count: 0,
                created,
                modified,
                creator,
                modifier,
                ext: Some(ext_pos as u8),
                version: 1 + rng.below(12) as u32,
            });
        }

        // Parents precede children, so one reverse pass accumulates folder sizes and counts.
        for i in (1..nodes.len()).rev() {
            let (size, parent) = (nodes[i].size, nodes[i].parent as usize);
            nodes[parent].size += size;
            nodes[parent].child_count += 1;
        }

        let order = depth_first(&nodes);
        Self { drive, nodes, order }
    }

    /// Items including the root.
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Ordinals in depth-first order, root first, parents before children.
    pub(crate) fn order(&self) -> &[u32] {
        &self.order
    }

    pub(crate) fn node(&self, ordinal: usize) -> &Node {
        &self.nodes[ordinal]
    }

    /// `/a/b/c.txt` for an item; `/` for the root.
    pub(crate) fn path(&self, ordinal: usize) -> String {
        let mut parts = Vec::new();
        let mut cur = ordinal;
        while cur != 0 {
            parts.push(self.nodes[cur].name.as_str());
            cur = self.nodes[cur].parent as usize;
        }
        if parts.is_empty() {
            return "/".to_owned();
        }
        parts.reverse();
        let mut path = String::new();
        for p in parts {
            path.push('/');
            path.push_str(p);
        }
        path
    }

    /// The full item for an ordinal (`ordinal < len()`).
    pub(crate) fn item(&self, tenant: &Tenant, drive: &SimDrive, ordinal: usize) -> SimItem {
        let n = &self.nodes[ordinal];
        let seed = tenant.seed();
        let key = self.drive.key();
        let identity = |who: u64| -> SimIdentity {
            if who == OWNER {
                drive.owner.clone()
            } else {
                tenant.identity(who)
            }
        };
        let path = self.path(ordinal);
        let web_url = if ordinal == 0 {
            drive.web_url.clone()
        } else {
            let encoded: Vec<String> = path
                .split('/')
                .skip(1)
                .map(|seg| utf8_percent_encode(seg, URL_SEGMENT).to_string())
                .collect();
            format!("{}/{}", drive.web_url, encoded.join("/"))
        };
        let etag_guid = guid(
            hash4(seed, K_ETAG, key, ordinal as u64),
            hash4(seed, K_ETAG, key, !(ordinal as u64)),
        )
        .to_uppercase();
        let ext = n.ext.map(|e| EXTENSIONS[e as usize]);
        let quick_xor_hash = ext.map(|_| {
            let mut bytes = [0u8; 20];
            for (j, chunk) in bytes.chunks_mut(4).enumerate() {
                let h = hash4(seed, K_QUICK_XOR, key, ((ordinal as u64) << 8) | j as u64);
                chunk.copy_from_slice(&h.to_be_bytes()[..4]);
            }
            STANDARD.encode(bytes)
        });
        SimItem {
            id: item_id(tenant, self.drive, ordinal),
            name: n.name.clone(),
            path,
            parent_id: (ordinal != 0).then(|| item_id(tenant, self.drive, n.parent as usize)),
            is_folder: n.is_folder,
            is_root: ordinal == 0,
            size: n.size,
            created: ts(n.created),
            modified: ts(n.modified),
            etag: format!("\"{{{etag_guid}}},{}\"", n.version),
            ctag: (!n.is_folder).then(|| format!("\"c:{{{etag_guid}}},{}\"", n.version)),
            created_by: identity(n.creator),
            modified_by: identity(n.modifier),
            mime_type: ext.map(|e| e.1.to_owned()),
            child_count: n.child_count,
            quick_xor_hash,
            web_url,
        }
    }
}

/// Depth-first pre-order over the tree, children in ordinal order.
fn depth_first(nodes: &[Node]) -> Vec<u32> {
    // Children lists in compressed form: offsets by parent, then ordinals.
    let mut offsets = vec![0u32; nodes.len() + 1];
    for n in &nodes[1..] {
        offsets[n.parent as usize + 1] += 1;
    }
    for i in 1..offsets.len() {
        offsets[i] += offsets[i - 1];
    }
    let mut fill = offsets.clone();
    let mut children = vec![0u32; nodes.len().saturating_sub(1)];
    for (i, n) in nodes.iter().enumerate().skip(1) {
        let slot = &mut fill[n.parent as usize];
        children[*slot as usize] = i as u32;
        *slot += 1;
    }
    let mut order = Vec::with_capacity(nodes.len());
    let mut stack = vec![0u32];
    while let Some(cur) = stack.pop() {
        order.push(cur);
        let (a, b) = (offsets[cur as usize] as usize, offsets[cur as usize + 1] as usize);
        stack.extend(children[a..b].iter().rev());
    }
    order
}

/// `01` + base32 of 20 bytes: the drive-keyed permutation of the ordinal, then a check value.
pub(crate) fn item_id(tenant: &Tenant, drive: DriveRef, ordinal: usize) -> String {
    let seed = tenant.seed();
    let key = drive.key();
    let perm = Perm::new(64, hash3(seed, K_ITEM_PERM, key));
    let ordinal = ordinal as u64;
    let mut bytes = [0u8; 20];
    bytes[..8].copy_from_slice(&perm.forward(ordinal).to_be_bytes());
    bytes[8..16].copy_from_slice(&hash4(seed, K_ITEM_CHECK, key, ordinal).to_be_bytes());
    bytes[16..].copy_from_slice(&hash4(seed, K_ITEM_CHECK, key, !ordinal).to_be_bytes()[..4]);
    format!("01{}", base32_encode(&bytes))
}

/// The ordinal an item id encodes for this drive, if the id is genuine. Does not check that the
/// ordinal exists in the generated tree (mutation hooks may allocate ordinals beyond it).
pub(crate) fn decode_item_id(tenant: &Tenant, drive: DriveRef, id: &str) -> Option<usize> {
    let raw = id.strip_prefix("01")?;
    let bytes = base32_decode(raw)?;
    if bytes.len() != 20 {
        return None;
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes[..8]);
    let perm = Perm::new(64, hash3(tenant.seed(), K_ITEM_PERM, drive.key()));
    let ordinal = usize::try_from(perm.inverse(u64::from_be_bytes(first))).ok()?;
    (ordinal < u32::MAX as usize && item_id(tenant, drive, ordinal) == id).then_some(ordinal)
}

/// Iterator over a drive's items (root excluded) in depth-first order. See
/// [`Tenant::drive_items`].
#[derive(Debug)]
pub struct DriveItems {
    tenant: Tenant,
    state: Option<(SimDrive, DriveTree)>,
    pos: usize,
}

impl DriveItems {
    pub(super) fn new(tenant: Tenant, drive: Option<(DriveRef, SimDrive)>) -> Self {
        let state = drive.map(|(d, sd)| {
            let tree = DriveTree::build(&tenant, d);
            (sd, tree)
        });
        Self { tenant, state, pos: 1 }
    }
}

impl Iterator for DriveItems {
    type Item = SimItem;

    fn next(&mut self) -> Option<SimItem> {
        let (drive, tree) = self.state.as_ref()?;
        let ordinal = *tree.order().get(self.pos)? as usize;
        self.pos += 1;
        Some(tree.item(&self.tenant, drive, ordinal))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.state.as_ref().map_or(0, |(_, t)| t.len().saturating_sub(self.pos));
        (left, Some(left))
    }
}

impl ExactSizeIterator for DriveItems {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimConfig;
    use std::collections::HashMap;

    fn tenant(fpd: FilesPerDrive) -> Tenant {
        Tenant::new(&SimConfig {
            users: 20,
            files_per_drive: fpd,
            no_drive_ratio: 0.0,
            ..SimConfig::with_seed(3)
        })
    }

    #[test]
    fn tree_is_depth_first_with_parents_first_and_unique_sibling_names() {
        let t = tenant(FilesPerDrive::Fixed(300));
        let tree = DriveTree::build(&t, DriveRef::User(1));
        assert_eq!(tree.len() as u64, 1 + 300 + (tree.len() as u64 - 301));
        assert_eq!(tree.order()[0], 0);
        assert_eq!(tree.order().len(), tree.len());
        let mut seen = HashSet::new();
        let mut names: HashMap<u32, HashSet<String>> = HashMap::new();
        for &o in tree.order() {
            let n = tree.node(o as usize);
            if o != 0 {
                assert!(seen.contains(&n.parent), "parent of {o} emitted first");
                assert!(names.entry(n.parent).or_default().insert(n.name.to_lowercase()));
                assert!(n.depth <= MAX_FOLDER_DEPTH + 1);
            }
            seen.insert(o);
        }
        let root = tree.node(0);
        let files_total: u64 = (1..tree.len())
            .filter(|i| !tree.node(*i).is_folder)
            .map(|i| tree.node(i).size)
            .sum();
        assert_eq!(root.size, files_total);
    }

    #[test]
    fn item_ids_round_trip_and_differ_between_drives() {
        let t = tenant(FilesPerDrive::Fixed(10));
        let a = item_id(&t, DriveRef::User(1), 5);
        let b = item_id(&t, DriveRef::User(2), 5);
        assert_ne!(a, b);
        assert_eq!(a.len(), 34);
        assert_eq!(decode_item_id(&t, DriveRef::User(1), &a), Some(5));
        assert_eq!(decode_item_id(&t, DriveRef::User(2), &a), None);
    }

    #[test]
    fn ranged_file_counts_vary_per_drive_within_bounds() {
        let t = tenant(FilesPerDrive::Range { min: 5, max: 50 });
        let counts: HashSet<usize> = (0..20)
            .map(|i| {
                let tree = DriveTree::build(&t, DriveRef::User(i));
                (1..tree.len()).filter(|o| !tree.node(*o).is_folder).count()
            })
            .inspect(|c| assert!((5..=50).contains(c)))
            .collect();
        assert!(counts.len() > 3);
    }
}
