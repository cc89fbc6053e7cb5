//! The gzip JSON Lines writer: one window's events cut into parts per observed hour.

use std::collections::BTreeMap;
use std::io::Write as _;

use chrono::{DateTime, Utc};
use flate2::Compression;
use flate2::write::GzEncoder;

use super::ExportSettings;
use super::line::ExportLine;
use super::window::{ExportWindow, floor_hour, object_key};
use crate::error::PortError;
use crate::events::EventRecord;
use crate::ports::PortResult;

/// A finished object: gzip JSON Lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedPart {
    pub key: String,
    pub body: Vec<u8>,
    pub events: usize,
}

struct OpenPart {
    encoder: GzEncoder<Vec<u8>>,
    events: usize,
}

/// Cuts one window's events, given in merge order, into gzip parts per observed hour.
///
/// Deterministic: which event goes to which key depends only on the sequence of events given
/// (a part is finished when it holds [`ExportSettings::part_max_events`], or early, fullest
/// first, when [`ExportSettings::max_buffered_events`] or [`ExportSettings::max_open_parts`]
/// would be exceeded), never on sizes or timing. Memory is bounded by those limits.
pub struct PartWriter {
    connection: String,
    window: ExportWindow,
    part_max_events: usize,
    max_buffered_events: usize,
    max_open_parts: usize,
    open: BTreeMap<DateTime<Utc>, OpenPart>,
    next_part: BTreeMap<DateTime<Utc>, u32>,
    buffered: usize,
}

impl PartWriter {
    pub fn new(connection: &str, window: ExportWindow, settings: &ExportSettings) -> Self {
        Self {
            connection: connection.to_owned(),
            window,
            part_max_events: settings.part_max_events.max(1),
            max_buffered_events: settings.max_buffered_events.max(1),
            max_open_parts: settings.max_open_parts.max(1),
            open: BTreeMap::new(),
            next_part: BTreeMap::new(),
            buffered: 0,
        }
    }

    /// Adds one event; returns the parts this finished (to be written now).
    ///
    /// # Errors
    /// Only if compressing into memory fails (it does not in practice).
    pub fn push(&mut self, record: &EventRecord) -> PortResult<Vec<FinishedPart>> {
        let mut done = Vec::new();
        let hour = floor_hour(record.event.observed_at);
        if !self.open.contains_key(&hour) && self.open.len() >= self.max_open_parts {
            done.extend(self.finish_fullest()?);
        }
        let mut line = serde_json::to_vec(&ExportLine::of(record)).map_err(|e| encode_error(&e))?;
        line.push(b'\n');
        let part = self.open.entry(hour).or_insert_with(|| OpenPart {
            encoder: GzEncoder::new(Vec::new(), Compression::default()),
            events: 0,
        });
        part.encoder.write_all(&line).map_err(|e| encode_error(&e))?;
        part.events += 1;
        self.buffered += 1;
        if part.events >= self.part_max_events {
            done.push(self.finish(hour)?);
        } else if self.buffered >= self.max_buffered_events {
            done.extend(self.finish_fullest()?);
        }
        Ok(done)
    }

    /// Finishes every open part, in observed-hour order.
    ///
    /// # Errors
    /// As [`Self::push`].
    pub fn finish_all(&mut self) -> PortResult<Vec<FinishedPart>> {
        let hours: Vec<DateTime<Utc>> = self.open.keys().copied().collect();
        hours.into_iter().map(|h| self.finish(h)).collect()
    }

    /// The open part with the most events (the earliest hour among equals).
    fn finish_fullest(&mut self) -> PortResult<Option<FinishedPart>> {
        let fullest = self
            .open
            .iter()
            .max_by(|a, b| a.1.events.cmp(&b.1.events).then(b.0.cmp(a.0)))
            .map(|(h, _)| *h);
        fullest.map(|h| self.finish(h)).transpose()
    }

    fn finish(&mut self, hour: DateTime<Utc>) -> PortResult<FinishedPart> {
        let Some(part) = self.open.remove(&hour) else {
            return Err(PortError::terminal(
                "export_part_missing",
                format!("no open export part for {hour}"),
                "report this as a bug",
            ));
        };
        self.buffered -= part.events;
        let number = self.next_part.entry(hour).or_insert(0);
        let key = object_key(&self.connection, &self.window, hour, *number);
        *number += 1;
        let body = part.encoder.finish().map_err(|e| encode_error(&e))?;
        Ok(FinishedPart {
            key,
            body,
            events: part.events,
        })
    }
}

fn encode_error(e: &dyn std::fmt::Display) -> PortError {
    PortError::terminal(
        "export_encode",
        format!("could not encode an export line: {e}"),
        "report this as a bug",
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::export::test_support::{event, t};

    #[test]
    fn parts_stay_within_the_memory_limits() {
        let settings = ExportSettings {
            part_max_events: 4,
            max_buffered_events: 6,
            max_open_parts: 2,
            ..ExportSettings::default()
        };
        let window = ExportWindow::containing(t("2026-11-22T10:00:00Z"));
        let mut writer = PartWriter::new("contoso", window, &settings);
        let mut parts = Vec::new();
        for i in 0..50 {
            let observed = format!("2026-11-2{}T0{}:00:00Z", i % 3, i % 5);
            parts.extend(
                writer
                    .push(&event(&format!("e{i}"), &observed, "2026-11-22T10:00:00Z"))
                    .unwrap(),
            );
            assert!(writer.open.len() <= 2 && writer.buffered <= 6);
        }
        parts.extend(writer.finish_all().unwrap());
        assert_eq!(parts.iter().map(|p| p.events).sum::<usize>(), 50);
        assert!(parts.iter().all(|p| p.events <= 4));
        let keys: BTreeSet<&str> = parts.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys.len(), parts.len(), "part numbers never repeat");
    }
}
