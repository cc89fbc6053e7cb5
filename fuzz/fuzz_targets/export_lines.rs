//! The export line writer (`filetrail_core::export::PartWriter`) on the events of arbitrary audit
//! blobs: attacker-chosen names, paths, user agents and times go into the JSON Lines objects that
//! Athena reads.
//!
//! Beyond "never panics": every event is written exactly once, as one line of valid JSON that
//! names it, in an object under the export prefix partitioned by the hour it happened.
#![no_main]

use std::collections::BTreeMap;
use std::io::Read as _;

use filetrail_core::audit::normalise_blob;
use filetrail_core::events::EventRecord;
use filetrail_core::export::{
    EXPORT_PREFIX, ExportSettings, ExportWindow, FinishedPart, PartWriter, floor_hour, partition_prefix,
};
use flate2::read::GzDecoder;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let ctx = filetrail_fuzz::audit_context();
    let Ok(outcome) = normalise_blob(data, &ctx) else {
        return;
    };
    // Small parts, few open at once: the cutting rules run on short inputs too.
    let settings = ExportSettings {
        part_max_events: 3,
        max_buffered_events: 5,
        max_open_parts: 2,
        ..ExportSettings::default()
    };
    let mut writer = PartWriter::new("contoso", ExportWindow::containing(ctx.inserted_at), &settings);
    let mut parts: Vec<FinishedPart> = Vec::new();
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    for event in outcome.events {
        // The events table holds one event per record id (the first insert wins), and the
        // export reads the table: a record a blob repeats is exported once.
        if expected.contains_key(&event.id) {
            continue;
        }
        expected.insert(event.id.clone(), partition_prefix(floor_hour(event.observed_at)));
        parts.extend(
            writer
                .push(&EventRecord::onedrive("contoso", event))
                .expect("an event is written"),
        );
    }
    parts.extend(writer.finish_all().expect("parts finish"));

    let mut written: BTreeMap<String, String> = BTreeMap::new();
    for part in &parts {
        assert!(part.key.starts_with(EXPORT_PREFIX), "{}", part.key);
        let mut text = String::new();
        GzDecoder::new(part.body.as_slice())
            .read_to_string(&mut text)
            .expect("a part is gzip UTF-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), part.events, "one line per event");
        for line in lines {
            let value: Value = serde_json::from_str(line).expect("each line is JSON");
            let id = value["event_id"]
                .as_str()
                .expect("each line names its event")
                .to_owned();
            let prefix = part
                .key
                .rsplit_once('/')
                .map(|(p, _)| format!("{p}/"))
                .unwrap_or_default();
            assert!(written.insert(id, prefix).is_none(), "an event is written once");
        }
    }
    assert_eq!(written.len(), expected.len(), "every event is written");
    for (id, prefix) in &expected {
        assert_eq!(
            written.get(id),
            Some(prefix),
            "event {id} is in the partition of the hour it happened"
        );
    }
});
