//! The AWS adapters against a real moto server (DynamoDB, SQS, S3, Secrets Manager over HTTP).
//!
//! One moto server serves every test of this binary; each test creates its own uniquely named
//! tables and queues, so tests run in parallel without seeing each other's data.

mod activity;
mod events;
mod inventory;
mod moto;
mod queue;
mod search;
mod secrets;
mod state;
mod support;
