//! Simulator configuration: tenant shape, credentials, paging and faults.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::prng::{guid, hash3, tag};

/// Default `$top` for `GET /users`: 100. Source: <https://learn.microsoft.com/en-us/graph/api/user-list>.
pub const USERS_PAGE_DEFAULT: u64 = 100;
/// Maximum `$top` for `GET /users`: 999; more is a 400. Source:
/// <https://learn.microsoft.com/en-us/graph/api/user-list>.
pub const USERS_PAGE_MAX: u64 = 999;
/// Default delta page size. The real page size is undocumented
/// (<https://learn.microsoft.com/en-us/graph/api/driveitem-delta> names none); 200 is our choice.
pub const DELTA_PAGE_DEFAULT: u64 = 200;
/// Largest delta page the simulator serves, whatever `$top` asks (our cap; undocumented upstream).
pub const DELTA_PAGE_MAX: u64 = 1000;
/// Default `$top` for `GET /groups` and group member listings: 100. Source:
/// <https://learn.microsoft.com/en-us/graph/api/group-list>,
/// <https://learn.microsoft.com/en-us/graph/api/group-list-transitivemembers>.
pub const GROUPS_PAGE_DEFAULT: u64 = 100;
/// Maximum `$top` for `GET /groups` and group member listings: 999. Source:
/// <https://learn.microsoft.com/en-us/graph/api/group-list>.
pub const GROUPS_PAGE_MAX: u64 = 999;
/// Most groups a simulated tenant may have (our cap: group metadata is O(groups), about 16 bytes
/// per group plus a lazily built name/mail index, so 100,000 groups stay under ~10 MB).
pub const GROUPS_MAX: u64 = 100_000;
/// Default access-token lifetime in seconds, as in Entra's documented sample `expires_in: 3599`
/// ("Successful response" in
/// <https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow#get-a-token>).
pub const TOKEN_LIFETIME_DEFAULT_SECS: u64 = 3599;

/// How many files each drive holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FilesPerDrive {
    /// Every drive holds exactly this many files.
    Fixed(u64),
    /// Each drive holds a deterministic, uniformly drawn count in `min..=max`.
    Range {
        /// Inclusive lower bound.
        min: u64,
        /// Inclusive upper bound.
        max: u64,
    },
}

impl Default for FilesPerDrive {
    fn default() -> Self {
        Self::Fixed(20)
    }
}

impl fmt::Display for FilesPerDrive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(n) => write!(f, "{n}"),
            Self::Range { min, max } => write!(f, "{min}..{max}"),
        }
    }
}

impl FromStr for FilesPerDrive {
    type Err = String;

    /// Parses `"20"` or `"5..50"` (also `"5..=50"` and `"5-50"`), bounds inclusive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s
            .split_once("..=")
            .or_else(|| s.split_once(".."))
            .or_else(|| s.split_once('-'));
        let parse = |v: &str| {
            v.trim()
                .parse::<u64>()
                .map_err(|e| format!("files per drive: '{v}' is not a number ({e})"))
        };
        match split {
            None => Ok(Self::Fixed(parse(s)?)),
            Some((a, b)) => {
                let (min, max) = (parse(a)?, parse(b)?);
                if min > max {
                    return Err(format!("files per drive: range '{s}' has min > max"));
                }
                Ok(Self::Range { min, max })
            }
        }
    }
}

/// Fault injection on Graph requests (never on the token endpoint or `/_sim`).
///
/// Each Graph request draws one uniform number: below `drop_rate` the connection is closed without
/// a response; then `throttle_rate` answers 429 or 503 with `Retry-After`; then `error_5xx_rate`
/// answers 500/502/504. Independently, `slow_rate` delays the response by `slow_ms`. Requests inside
/// a `$batch` draw separately: `batch_inner_throttle_rate` gives an inner 429 and `error_5xx_rate`
/// an inner 5xx, while the batch itself stays 200 (<https://learn.microsoft.com/en-us/graph/json-batching>).
///
/// Deserialisation fills missing fields with their defaults (all rates 0), so `POST /_sim/faults`
/// with `{"throttle_rate":0.2}` means "only throttling".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Share of Graph requests answered 429 (mostly) or 503, both with `Retry-After`.
    pub throttle_rate: f64,
    /// `Retry-After` range in seconds `(min, max)`; sent as an integer (`2`) or decimal (`0.128`).
    pub retry_after_secs: (f64, f64),
    /// Share of Graph requests answered 500, 502 or 504 (`generalException`).
    pub error_5xx_rate: f64,
    /// Share of Graph requests whose TCP connection is closed without any response.
    pub drop_rate: f64,
    /// Share of Graph requests delayed by `slow_ms` before being answered.
    pub slow_rate: f64,
    /// Delay for slow responses, in milliseconds.
    pub slow_ms: u64,
    /// Share of requests inside a `$batch` answered with an inner 429 + `Retry-After`.
    pub batch_inner_throttle_rate: f64,
    /// Share of `…/content` and download-URL requests answered 429 (mostly) or 503 with
    /// `Retry-After` (SharePoint throttles downloads too,
    /// <https://learn.microsoft.com/sharepoint/dev/general-development/how-to-avoid-getting-throttled-or-blocked-in-sharepoint-online>),
    /// on top of the Graph faults
    /// above (which `/content`, a Graph request, also gets).
    pub content_throttle_rate: f64,
    /// Share of download-URL responses whose connection is cut in the middle of the body, after
    /// a number of bytes drawn from `content_drop_after_bytes` (no cut if the body is shorter),
    /// so clients must resume with `Range`.
    pub content_drop_rate: f64,
    /// Range `(min, max)` of body bytes sent before such a cut.
    pub content_drop_after_bytes: (u64, u64),
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            throttle_rate: 0.0,
            retry_after_secs: (0.05, 0.5),
            error_5xx_rate: 0.0,
            drop_rate: 0.0,
            slow_rate: 0.0,
            slow_ms: 200,
            batch_inner_throttle_rate: 0.0,
            content_throttle_rate: 0.0,
            content_drop_rate: 0.0,
            content_drop_after_bytes: (1, 1 << 20),
        }
    }
}

impl FaultConfig {
    /// Checks that rates are probabilities, that the exclusive outcomes fit in one draw and that
    /// the `Retry-After` range is sane. The message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("throttle_rate", self.throttle_rate),
            ("error_5xx_rate", self.error_5xx_rate),
            ("drop_rate", self.drop_rate),
            ("slow_rate", self.slow_rate),
            ("batch_inner_throttle_rate", self.batch_inner_throttle_rate),
            ("content_throttle_rate", self.content_throttle_rate),
            ("content_drop_rate", self.content_drop_rate),
        ];
        for (name, r) in rates {
            if !(0.0..=1.0).contains(&r) {
                return Err(format!("{name} must be within 0..=1, got {r}"));
            }
        }
        let exclusive = self.drop_rate + self.throttle_rate + self.error_5xx_rate;
        if exclusive > 1.0 + 1e-9 {
            return Err(format!(
                "drop_rate + throttle_rate + error_5xx_rate must not exceed 1, got {exclusive}"
            ));
        }
        if self.batch_inner_throttle_rate + self.error_5xx_rate > 1.0 + 1e-9 {
            return Err("batch_inner_throttle_rate + error_5xx_rate must not exceed 1".into());
        }
        let (drop_lo, drop_hi) = self.content_drop_after_bytes;
        if drop_hi < drop_lo {
            return Err(format!(
                "content_drop_after_bytes must be (min, max) with min <= max, got ({drop_lo}, {drop_hi})"
            ));
        }
        let (lo, hi) = self.retry_after_secs;
        if !(lo.is_finite() && hi.is_finite()) || lo < 0.0 || hi < lo {
            return Err(format!(
                "retry_after_secs must be (min, max) with 0 <= min <= max, got ({lo}, {hi})"
            ));
        }
        Ok(())
    }
}

/// Versions kept per file by default (OneDrive: "a minimum of 500 major versions").
pub const VERSIONS_KEPT_DEFAULT: usize = 500;

/// Everything that shapes a simulated tenant and its server.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of every generated value. Same seed, same tenant.
    pub seed: u64,
    /// Number of users in the directory.
    pub users: u64,
    /// Files per drive (fixed or a per-drive uniform range).
    pub files_per_drive: FilesPerDrive,
    /// Share of users without a provisioned OneDrive (deterministic per user).
    pub no_drive_ratio: f64,
    /// Number of SharePoint team sites, each with one `documentLibrary` drive.
    pub team_sites: u32,
    /// Number of directory groups. The first `min(groups, team_sites)` are the team sites'
    /// Microsoft 365 groups (their ids are the libraries' owner ids).
    pub groups: u64,
    /// Average number of *direct user* members per group (sizes vary per group; one group in 25
    /// is about 12 times larger). Distinct users in groups ≈ `min(users, 0.93 × groups ×
    /// group_members_avg)`: 1,000 groups averaging 215 cover ~200,000 users.
    pub group_members_avg: u64,
    /// Share of groups (team-site groups excepted) that have other groups as members.
    pub nested_group_ratio: f64,
    /// Default delta page size when the client sends no `$top`.
    pub page_size_default: u64,
    /// Lifetime of issued access tokens (`expires_in`).
    pub token_lifetime: Duration,
    /// The one registered application's client id. Empty = derived from the seed.
    pub client_id: String,
    /// Its client secret. Empty = derived from the seed.
    pub client_secret: String,
    /// Directory (tenant) id. Empty = derived from the seed.
    pub tenant_id: String,
    /// Initial domain, e.g. `contoso.onmicrosoft.com`; its first label names the SharePoint host.
    pub domain: String,
    /// Faults injected from the start (changeable at run time).
    pub faults: FaultConfig,
    /// Probability that a delta page repeats an item already sent earlier in the same enumeration
    /// ("the same item may appear more than once",
    /// <https://learn.microsoft.com/en-us/graph/api/driveitem-delta#remarks>).
    pub delta_repeat_rate: f64,
    /// TCP port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Lifetime of the pre-authenticated download URLs (`@microsoft.graph.downloadUrl`, the
    /// `Location` of `…/content`); default one hour
    /// (<https://learn.microsoft.com/en-us/graph/api/resources/driveitem>).
    pub download_url_lifetime: Duration,
    /// Versions kept per file (`…/versions`), the oldest deleted first; OneDrive's default
    /// keeps "a minimum of 500 major versions" ("How retention works with document versions" in
    /// <https://learn.microsoft.com/en-us/purview/retention-policies-sharepoint>).
    pub versions_kept: usize,
    /// The Management Activity API: publication delay, blob grouping, duplicates, late blobs,
    /// paging, audit log on/off, `AF429`/`AF50000` faults (`crate::activity`).
    pub activity: crate::activity::ActivityConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self::with_seed(1)
    }
}

impl SimConfig {
    /// The default configuration for `seed`, with credentials derived from it.
    #[must_use]
    pub fn with_seed(seed: u64) -> Self {
        Self {
            seed,
            users: 100,
            files_per_drive: FilesPerDrive::default(),
            no_drive_ratio: 0.1,
            team_sites: 3,
            groups: 20,
            group_members_avg: 25,
            nested_group_ratio: 0.2,
            page_size_default: DELTA_PAGE_DEFAULT,
            token_lifetime: Duration::from_secs(TOKEN_LIFETIME_DEFAULT_SECS),
            client_id: derived_client_id(seed),
            client_secret: derived_client_secret(seed),
            tenant_id: derived_tenant_id(seed),
            domain: "contoso.onmicrosoft.com".to_owned(),
            faults: FaultConfig::default(),
            delta_repeat_rate: 0.01,
            port: 0,
            download_url_lifetime: Duration::from_secs(crate::content::DOWNLOAD_URL_LIFETIME_DEFAULT_SECS),
            versions_kept: VERSIONS_KEPT_DEFAULT,
            activity: crate::activity::ActivityConfig::default(),
        }
    }

    /// Effective client id (the configured one, or the seed-derived default if empty).
    #[must_use]
    pub fn effective_client_id(&self) -> String {
        non_empty_or(&self.client_id, || derived_client_id(self.seed))
    }

    /// Effective client secret (configured, or seed-derived if empty).
    #[must_use]
    pub fn effective_client_secret(&self) -> String {
        non_empty_or(&self.client_secret, || derived_client_secret(self.seed))
    }

    /// Effective tenant id (configured, or seed-derived if empty).
    #[must_use]
    pub fn effective_tenant_id(&self) -> String {
        non_empty_or(&self.tenant_id, || derived_tenant_id(self.seed))
    }

    /// Checks the configuration; the message names the bad setting.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.no_drive_ratio) {
            return Err(format!(
                "no_drive_ratio must be within 0..=1, got {}",
                self.no_drive_ratio
            ));
        }
        if !(0.0..=1.0).contains(&self.delta_repeat_rate) {
            return Err(format!(
                "delta_repeat_rate must be within 0..=1, got {}",
                self.delta_repeat_rate
            ));
        }
        if !(0.0..=1.0).contains(&self.nested_group_ratio) {
            return Err(format!(
                "nested_group_ratio must be within 0..=1, got {}",
                self.nested_group_ratio
            ));
        }
        if self.groups > GROUPS_MAX {
            return Err(format!("groups must be at most {GROUPS_MAX}, got {}", self.groups));
        }
        if self.group_members_avg > 1_000_000 {
            return Err(format!(
                "group_members_avg must be at most 1,000,000, got {}",
                self.group_members_avg
            ));
        }
        if self.users >= (1u64 << 40) {
            return Err(format!("users must be below 2^40, got {}", self.users));
        }
        let (FilesPerDrive::Fixed(n) | FilesPerDrive::Range { max: n, .. }) = self.files_per_drive;
        if n > 1_000_000 {
            return Err(format!("files_per_drive must be at most 1,000,000, got {n}"));
        }
        if self.page_size_default == 0 || self.page_size_default > DELTA_PAGE_MAX {
            return Err(format!(
                "page_size_default must be within 1..={DELTA_PAGE_MAX}, got {}",
                self.page_size_default
            ));
        }
        if self.token_lifetime.is_zero() {
            return Err("token_lifetime must be positive".into());
        }
        let domain = self.domain.trim();
        if domain.is_empty() || !domain.contains('.') || domain.contains(['/', '@', ' ']) {
            return Err(format!(
                "domain must look like 'contoso.onmicrosoft.com', got '{domain}'"
            ));
        }
        self.activity.validate()?;
        self.faults.validate().map_err(|e| format!("faults: {e}"))
    }
}

fn non_empty_or(v: &str, f: impl FnOnce() -> String) -> String {
    if v.trim().is_empty() { f() } else { v.to_owned() }
}

const K_CLIENT_ID: u64 = tag(b"client-id");
const K_CLIENT_SECRET: u64 = tag(b"client-secret");
const K_TENANT_ID: u64 = tag(b"tenant-id");

/// The seed's default application (client) id.
#[must_use]
pub fn derived_client_id(seed: u64) -> String {
    guid(hash3(seed, K_CLIENT_ID, 0), hash3(seed, K_CLIENT_ID, 1))
}

/// The seed's default tenant id.
#[must_use]
pub fn derived_tenant_id(seed: u64) -> String {
    guid(hash3(seed, K_TENANT_ID, 0), hash3(seed, K_TENANT_ID, 1))
}

/// The seed's default client secret, shaped like an Entra secret value (40 characters, `~` at 4).
#[must_use]
pub fn derived_client_secret(seed: u64) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.";
    let mut rng = crate::prng::Rng::new(hash3(seed, K_CLIENT_SECRET, 0));
    let mut s = String::with_capacity(40);
    for i in 0..40 {
        if i == 3 {
            s.push('~');
        } else {
            s.push(char::from(*rng.pick(ALPHABET)));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_per_drive_parses_fixed_and_ranges() {
        assert_eq!("20".parse::<FilesPerDrive>(), Ok(FilesPerDrive::Fixed(20)));
        assert_eq!("5..50".parse(), Ok(FilesPerDrive::Range { min: 5, max: 50 }));
        assert_eq!("5..=50".parse(), Ok(FilesPerDrive::Range { min: 5, max: 50 }));
        assert!("50..5".parse::<FilesPerDrive>().is_err());
        assert!("x".parse::<FilesPerDrive>().is_err());
    }

    #[test]
    fn default_config_is_valid_and_seed_derived() {
        let c = SimConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.client_id, derived_client_id(1));
        assert_ne!(derived_client_id(1), derived_client_id(2));
        assert_eq!(derived_client_secret(7).len(), 40);
    }

    #[test]
    fn fault_rates_over_one_are_rejected() {
        let f = FaultConfig {
            throttle_rate: 0.7,
            error_5xx_rate: 0.5,
            ..FaultConfig::default()
        };
        assert!(f.validate().is_err());
        let f = FaultConfig {
            retry_after_secs: (2.0, 1.0),
            ..FaultConfig::default()
        };
        assert!(f.validate().is_err());
    }
}
