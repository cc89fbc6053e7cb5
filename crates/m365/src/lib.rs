//! Microsoft 365 clients for filetrail: Entra ID app-only tokens, Microsoft Graph (users, users'
//! OneDrives through `$batch`, user and group lookups for scoping, groups' transitive members,
//! driveItem delta, streaming downloads of item content in [`content`], item permissions and
//! their removal in [`permissions`]), all behind one throttling and retry policy.
//!
//! Wiring: build one [`reqwest::Client`] per process with [`http_client`], then per connection a
//! [`GraphClient`] (with [`GraphClient::connect`], or [`GraphClient::new`] around a shared
//! [`TokenProvider`]). `GraphClient` implements the core ports
//! [`filetrail_core::ports::Directory`], [`filetrail_core::ports::DriveFinder`] and
//! [`filetrail_core::ports::DriveDelta`]; every error converts into a
//! [`filetrail_core::PortError`] with its retry class, code and fix.
//!
//! The Office 365 Management Activity API client is [`ActivityClient`] ([`activity`]: subscriptions,
//! content listing, blobs, with `PublisherIdentifier` on every call); it implements
//! [`filetrail_core::ports::ActivityFeed`].

pub mod activity;
pub mod cloud;
pub mod content;
pub mod error;
pub mod graph;
pub mod http;
pub mod permissions;
mod ports;
pub mod probe;
pub mod retry;
pub mod token;
pub mod wire;

pub use activity::{ActivityClient, ContentBlob, ContentPage, Subscription, SubscriptionOutcome};
pub use cloud::{CLOUD_PRESETS, Cloud};
pub use error::{
    AuthError, AuthFailure, ErrorBody, M365Error, ServiceError, ServiceErrorKind, TransportKind, is_connection_problem,
};
pub use graph::{BATCH_MAX_REQUESTS, GraphClient};
pub use http::{HttpTimeouts, USER_AGENT, http_client};
pub use permissions::{Grantee, GranteeKind, ItemPermission, LinkKind, LinkScope, SharingLink};
pub use ports::listed_permission;
pub use retry::{RequestStats, RetryPolicy, parse_retry_after};
pub use token::{AccessToken, ClientSecret, Credentials, TokenProvider};
