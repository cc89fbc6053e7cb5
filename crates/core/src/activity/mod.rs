//! The audit feed: polling the Management Activity API for content blobs ([`poll`]) and
//! ingesting each blob into file events ([`ingest`]).
//!
//! Polling lists what became available since its checkpoint in windows of at most 24 hours within
//! the 7-day retention (the window filters on `contentCreated`, start inclusive, end exclusive:
//! "List available content" in
//! <https://learn.microsoft.com/office/office-365-management-api/office-365-management-activity-api-reference>),
//! page by page, and enqueues each blob once: blobs already enqueued are remembered by content id
//! past the retention, and a trailing overlap is listed again on every poll so blobs that show up
//! late in a window already listed are still caught. The checkpoint moves only after a page's blobs
//! are enqueued, so a crash lists that page again and the dedupe keeps it from being enqueued
//! twice.
//!
//! Ingesting normalises a blob ([`crate::audit`]), keeps the events of monitored drives (the
//! file owner's drive: activity of a monitored user on someone else's unmonitored drive is not
//! captured), resolves their items, writes each event once (keyed by the record `Id`, which the
//! feed repeats by design), quarantines what cannot be normalised and asks for hashes.

pub mod ingest;
pub mod poll;
pub mod resolve;

pub use resolve::{PendingResolved, ResolvePorts, resolve_pending};

/// The feed's types, defined in [`crate::feed`] (below every use case).
pub use crate::feed::*;
