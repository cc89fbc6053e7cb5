//! The filetrail domain: what a connection, a drive and an inventory row are, the rules that
//! decide what is monitored, the discovery and indexing use cases written against small ports,
//! and the one-pass MD5 + SHA-256 of file content ([`digest`]). Nothing here touches the network or
//! AWS; adapters live in `filetrail-m365` and `filetrail-aws`, and tests of the rules need no
//! server.

pub mod activity;
pub mod apply_scope;
pub mod audit;
pub mod budget;
pub mod digest;
pub mod discover;
pub mod error;
pub mod events;
pub mod export;
pub mod exposure;
pub mod feed;
pub mod hashing;
pub mod index;
pub mod jobs;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
pub mod model;
pub mod paths;
pub mod permissions;
pub mod ports;
pub mod scope;
pub mod search;
pub mod time_arg;

pub use error::{PortError, RetryClass};
