//! The audit blob normaliser (`filetrail_core::audit::normalise_blob`) on arbitrary bytes: a
//! content blob comes from the network, and its records carry text that users and anonymous
//! link visitors choose (file names, paths, user agents, sharing targets).
//!
//! Beyond "never panics": every record of a blob is accounted for exactly once (an event, a
//! counted skip or a quarantine), a quarantine keeps at most its cap of raw bytes, and every
//! event survives the JSON round trip it takes into the events table and back.
#![no_main]

use filetrail_core::audit::{FileEvent, MAX_QUARANTINE_RAW_BYTES, normalise_blob};
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

fuzz_target!(|data: &[u8]| {
    let ctx = filetrail_fuzz::audit_context();
    let Ok(outcome) = normalise_blob(data, &ctx) else {
        assert!(
            serde_json::from_slice::<Vec<&RawValue>>(data).is_err(),
            "a JSON array was refused whole"
        );
        return;
    };
    let records = serde_json::from_slice::<Vec<&RawValue>>(data)
        .map(|r| r.len())
        .unwrap_or_default();
    assert_eq!(
        outcome.records(),
        records as u64,
        "every record is an event, a skip or a quarantine"
    );
    for q in &outcome.quarantined {
        assert!(q.raw.as_ref().is_none_or(|r| r.len() <= MAX_QUARANTINE_RAW_BYTES));
        assert!(!q.reason.code().is_empty());
    }
    for event in &outcome.events {
        let stored = serde_json::to_string(event).expect("an event serialises");
        let read: FileEvent = serde_json::from_str(&stored).expect("a stored event reads back");
        assert_eq!(&read, event, "an event reads back as it was stored");
    }
});
