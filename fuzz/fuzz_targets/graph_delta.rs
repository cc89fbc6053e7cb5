//! The driveItem delta page decoder (`filetrail_m365::wire::delta_page`) on arbitrary bytes:
//! the body of `GET /drives/{id}/root/delta` as the network delivers it.
//!
//! Beyond "never panics": a decoded page keeps every item it listed, in order, with its id (an
//! item dropped here would be a file the inventory never sees), and the root is a folder.
#![no_main]

use filetrail_fuzz::ListedIds;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(page) = filetrail_m365::wire::delta_page(data) else {
        return;
    };
    let listed: ListedIds = serde_json::from_slice(data).expect("a decoded page lists members with ids");
    let listed = listed.value;
    assert_eq!(page.items.len(), listed.len(), "every listed item is decoded");
    for (item, raw) in page.items.iter().zip(&listed) {
        assert_eq!(Some(item.id.as_str()), Some(raw.id.as_str()));
        assert!(!item.is_root || item.is_folder, "the root is a folder");
    }
});
