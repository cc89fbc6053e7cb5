//! The scope CSV parser (`filetrail_core::scope::csv::parse_scope_csv`) on arbitrary bytes: an
//! admin uploads the file, often from Excel, in any encoding. The first byte picks the list kind.
//!
//! Beyond "never panics": an accepted list accounts for every data row (entries + duplicates +
//! rejected), holds at least one entry, each trimmed and unique ignoring case; a refused file
//! has a message that says what to do.
#![no_main]

use std::collections::HashSet;

use filetrail_core::scope::csv::{ListKind, parse_scope_csv};
use filetrail_core::scope::{GroupSelector, ScopeEntry, UserSelector};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let kind = if selector & 1 == 0 {
        ListKind::Users
    } else {
        ListKind::Groups
    };
    match parse_scope_csv(kind, body) {
        Ok(list) => {
            let accounted = list.entries.len() as u64 + list.duplicates + list.rejected.len() as u64;
            assert_eq!(
                list.rows, accounted,
                "every data row is an entry, a duplicate or rejected"
            );
            assert!(!list.entries.is_empty(), "an accepted list names someone");
            let mut seen = HashSet::new();
            for entry in &list.entries {
                let value = entry.value();
                assert_eq!(value, value.trim(), "entries are trimmed");
                assert!(!value.is_empty());
                assert!(
                    seen.insert((column(entry), value.to_lowercase())),
                    "entries are distinct: {entry}"
                );
            }
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
});

/// Which kind of value an entry is: duplicates are the same value, ignoring case, of one kind.
fn column(entry: &ScopeEntry) -> u8 {
    match entry {
        ScopeEntry::User(UserSelector::Email(_)) => 0,
        ScopeEntry::User(UserSelector::DisplayName(_)) => 1,
        ScopeEntry::Group(GroupSelector::Mail(_)) => 2,
        ScopeEntry::Group(GroupSelector::DisplayName(_)) => 3,
    }
}
