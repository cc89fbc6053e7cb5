//! The users page decoder (`filetrail_m365::wire::users_page`) on arbitrary bytes: the body of
//! `GET /users` or of a group's transitive user members.
//!
//! Beyond "never panics": a decoded page keeps every user it listed, in order, with the id it
//! was listed with (discovery keys drives by user id; a dropped user is an unmonitored drive).
#![no_main]

use filetrail_fuzz::ListedIds;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(page) = filetrail_m365::wire::users_page(data) else {
        return;
    };
    let listed: ListedIds = serde_json::from_slice(data).expect("a decoded page lists members with ids");
    let listed = listed.value;
    assert_eq!(page.users.len(), listed.len(), "every listed user is decoded");
    for (user, raw) in page.users.iter().zip(&listed) {
        assert_eq!(Some(user.id.as_str()), Some(raw.id.as_str()));
    }
});
