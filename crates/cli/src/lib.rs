//! The `filetrail` command line: connection status, connection registration and the local stack
//! runner. The binary (`main.rs`) parses arguments; the work lives here so end-to-end tests drive
//! the same code.

pub mod connection;
pub mod csv_out;
pub mod events;
pub mod export;
pub mod exposure;
pub mod file;
pub mod inventory;
pub mod local;
pub mod pipeline;
pub mod redrive;
pub mod scope;
pub mod search;
pub mod status;
pub mod table;
