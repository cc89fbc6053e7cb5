//! Building item paths from parent chains.
//!
//! OneDrive for Business delta does not return `parentReference.path`
//! (<https://learn.microsoft.com/en-us/graph/api/driveitem-delta#remarks>), so the path of an item
//! is its parent's path plus its name. Parents usually arrive before their children, but not always
//! within one page, so resolution runs to a fixed point over the page and asks the caller for
//! parents seen on earlier pages.

use std::collections::HashMap;

use crate::model::DeltaItem;

/// Path of the drive root.
pub const ROOT_PATH: &str = "/";

/// Remembers the paths of items seen during one walk.
#[derive(Debug, Default)]
pub struct PathCache {
    paths: HashMap<String, String>,
}

/// The outcome of resolving one page.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// item id → path, for every live item of the page whose chain could be resolved.
    pub paths: HashMap<String, String>,
    /// Parent ids that are neither in the page nor in the cache: look them up and call again.
    pub missing_parents: Vec<String>,
}

impl PathCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// A cache that already knows the drive root (when its id is known).
    pub fn with_root(root_id: Option<&str>) -> Self {
        let mut cache = Self::new();
        if let Some(id) = root_id {
            cache.insert(id, ROOT_PATH);
        }
        cache
    }

    pub fn get(&self, id: &str) -> Option<&str> {
        self.paths.get(id).map(String::as_str)
    }

    pub fn insert(&mut self, id: impl Into<String>, path: impl Into<String>) {
        self.paths.insert(id.into(), path.into());
    }

    pub fn remove(&mut self, id: &str) {
        self.paths.remove(id);
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Resolves the paths of the live items of a page, remembering every resolved path (so later
    /// pages find their parents). Items whose parent is unknown stay unresolved and their parent
    /// ids are reported in `missing_parents`.
    pub fn resolve(&mut self, items: &[DeltaItem]) -> Resolved {
        let mut pending: Vec<&DeltaItem> = items.iter().filter(|i| !i.deleted).collect();
        let mut out = Resolved::default();
        loop {
            let before = pending.len();
            pending.retain(|item| match self.path_of(item) {
                Some(path) => {
                    self.paths.insert(item.id.clone(), path.clone());
                    out.paths.insert(item.id.clone(), path);
                    false
                }
                None => true,
            });
            if pending.is_empty() || pending.len() == before {
                break;
            }
        }
        let in_page: std::collections::HashSet<&str> = pending.iter().map(|i| i.id.as_str()).collect();
        let mut missing: Vec<String> = pending
            .iter()
            .filter_map(|i| i.parent_id.as_deref())
            .filter(|p| !in_page.contains(p))
            .map(str::to_owned)
            .collect();
        missing.sort();
        missing.dedup();
        out.missing_parents = missing;
        out
    }

    fn path_of(&self, item: &DeltaItem) -> Option<String> {
        if item.is_root {
            return Some(ROOT_PATH.to_owned());
        }
        let name = item.name.as_deref().unwrap_or(&item.id);
        let parent = self.paths.get(item.parent_id.as_deref()?)?;
        Some(join(parent, name))
    }
}

/// Joins a parent path and a name: `/` + `a` = `/a`, `/a` + `b` = `/a/b`.
pub fn join(parent: &str, name: &str) -> String {
    if parent.ends_with('/') {
        format!("{parent}{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// The path of an item whose parent chain cannot be resolved: the name under a marker folder so
/// the row is still written, searchable by name, and visibly incomplete.
pub fn unresolved_path(name: &str) -> String {
    join("/(unknown folder)", name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, parent: Option<&str>, name: &str) -> DeltaItem {
        DeltaItem {
            list_item_uid: None,
            id: id.into(),
            name: Some(name.into()),
            parent_id: parent.map(Into::into),
            is_root: parent.is_none(),
            is_folder: true,
            deleted: false,
            size: None,
            created_at: None,
            modified_at: None,
            etag: None,
            ctag: None,
            created_by: None,
            modified_by: None,
            mime_type: None,
            shared_scope: None,
            sharing_changed: false,
        }
    }

    #[test]
    fn children_listed_before_their_parent_in_a_page_still_resolve() {
        let mut cache = PathCache::new();
        let page = vec![
            item("c", Some("b"), "c.txt"),
            item("b", Some("r"), "B"),
            item("r", None, "root"),
        ];
        let r = cache.resolve(&page);
        assert_eq!(r.paths["r"], "/");
        assert_eq!(r.paths["b"], "/B");
        assert_eq!(r.paths["c"], "/B/c.txt");
        assert!(r.missing_parents.is_empty());
    }

    #[test]
    fn parents_from_earlier_pages_are_reported_missing_until_supplied() {
        let mut cache = PathCache::new();
        let page = vec![item("x", Some("p"), "x.txt"), item("y", Some("x"), "y.txt")];
        let r = cache.resolve(&page);
        assert!(r.paths.is_empty());
        assert_eq!(r.missing_parents, vec!["p".to_string()]);
        cache.insert("p", "/Docs");
        let r = cache.resolve(&page);
        assert_eq!(r.paths["y"], "/Docs/x.txt/y.txt");
    }

    #[test]
    fn deleted_items_get_no_path() {
        let mut cache = PathCache::new();
        let mut gone = item("g", Some("r"), "gone");
        gone.deleted = true;
        let r = cache.resolve(&[item("r", None, "root"), gone]);
        assert!(!r.paths.contains_key("g"));
    }
}
