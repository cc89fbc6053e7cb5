//! Wiring shared by the filetrail Lambda functions and the local runner.
//!
//! A function is a [`Function`]: it builds one [`FunctionSettings`] and its clients at cold start
//! (from the process environment in AWS, from the template-resolved variables in the local
//! runner), keeps them in its context struct, and borrows that context into every invocation.
//! Its `main` is [`serve`].

pub mod connections;
pub mod function;
pub mod logging;
pub mod metrics;
pub mod settings;
pub mod sqs;

pub use connections::{ConnectionClients, accepting};
pub use function::{Function, serve};
pub use settings::FunctionSettings;
