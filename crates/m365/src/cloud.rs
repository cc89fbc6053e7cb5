//! Microsoft clouds: the base URLs of Entra ID (login), Microsoft Graph and the Office 365
//! Management Activity API for each national cloud, plus custom URLs for a simulator or a proxy.

use std::fmt;

use filetrail_core::model::Endpoints;

use crate::error::M365Error;

/// The named cloud presets, in the order the CLI lists them.
pub const CLOUD_PRESETS: [&str; 5] = ["worldwide", "gcc", "gcc-high", "dod", "china"];

/// The name a connection uses for explicit base URLs (the simulator, a proxy).
pub const CUSTOM_CLOUD: &str = "custom";

/// The Graph API version filetrail is written against.
pub const GRAPH_VERSION: &str = "v1.0";

/// Base URLs of one Microsoft cloud. All URLs are stored without a trailing slash.
///
/// Sources: Graph national-cloud table (microsoft-graph-docs-contrib concepts/deployments.md:
/// login.microsoftonline.us, graph.microsoft.us, dod-graph.microsoft.us, login.chinacloudapi.cn,
/// microsoftgraph.chinacloudapi.cn); Management Activity API reference (manage.office.com,
/// manage-gcc.office.com, manage.office365.us, manage.protection.apps.mil); China's Management API
/// host manage.office.cn is not in Microsoft's reference, only in Microsoft and third-party
/// scripts (e.g. CSS-Exchange `managementApiEndpoint`), so treat it as best known.
#[derive(Clone, PartialEq, Eq)]
pub struct Cloud {
    name: String,
    login: String,
    graph: String,
    management: String,
    graph_resource: String,
    management_resource: String,
}

/// Worldwide Graph App ID URI (scope `https://graph.microsoft.com/.default`:
/// <https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow#get-a-token>).
pub const WORLDWIDE_GRAPH_RESOURCE: &str = "https://graph.microsoft.com";
/// Worldwide Management Activity API App ID URI (`https://manage.office.com/.default`:
/// <https://learn.microsoft.com/office/office-365-management-api/get-started-with-office-365-management-apis>).
pub const WORLDWIDE_MANAGEMENT_RESOURCE: &str = "https://manage.office.com";

impl Cloud {
    /// Commercial Microsoft 365 (also the default).
    pub fn worldwide() -> Self {
        Self::preset(
            "worldwide",
            "https://login.microsoftonline.com",
            "https://graph.microsoft.com",
            "https://manage.office.com",
        )
    }

    /// US Government Community Cloud (moderate): commercial Entra and Graph, its own Management
    /// API host.
    pub fn gcc() -> Self {
        Self::preset(
            "gcc",
            "https://login.microsoftonline.com",
            "https://graph.microsoft.com",
            "https://manage-gcc.office.com",
        )
    }

    /// US Government Community Cloud High (Graph "US Government L4").
    pub fn gcc_high() -> Self {
        Self::preset(
            "gcc-high",
            "https://login.microsoftonline.us",
            "https://graph.microsoft.us",
            "https://manage.office365.us",
        )
    }

    /// US Department of Defense (Graph "US Government L5").
    pub fn dod() -> Self {
        Self::preset(
            "dod",
            "https://login.microsoftonline.us",
            "https://dod-graph.microsoft.us",
            "https://manage.protection.apps.mil",
        )
    }

    /// Microsoft 365 operated by 21Vianet in China.
    pub fn china() -> Self {
        Self::preset(
            "china",
            "https://login.chinacloudapi.cn",
            "https://microsoftgraph.chinacloudapi.cn",
            "https://manage.office.cn",
        )
    }

    fn preset(name: &str, login: &str, graph_host: &str, management: &str) -> Self {
        Self {
            name: name.to_owned(),
            login: login.to_owned(),
            graph: format!("{graph_host}/{GRAPH_VERSION}"),
            management: management.to_owned(),
            graph_resource: graph_host.to_owned(),
            management_resource: management.to_owned(),
        }
    }

    /// Explicit base URLs (a simulator or a proxy). `graph` includes the API version
    /// (`http://127.0.0.1:8080/v1.0`); `login` is the token authority without the tenant.
    /// Tokens are requested for the worldwide resources (`https://graph.microsoft.com/.default`),
    /// as a proxy or the simulator fronts those services; see [`Cloud::with_resources`].
    ///
    /// Fails when a URL is not an absolute `http`/`https` URL.
    pub fn custom(login: &str, graph: &str, management: &str) -> Result<Self, M365Error> {
        Ok(Self {
            name: CUSTOM_CLOUD.to_owned(),
            login: checked_base("login", login)?,
            graph: checked_base("graph", graph)?,
            management: checked_base("management", management)?,
            graph_resource: WORLDWIDE_GRAPH_RESOURCE.to_owned(),
            management_resource: WORLDWIDE_MANAGEMENT_RESOURCE.to_owned(),
        })
    }

    /// The same URLs, with tokens requested for other resources (App ID URIs without
    /// `/.default`), e.g. a proxy in front of a national cloud.
    pub fn with_resources(mut self, graph_resource: &str, management_resource: &str) -> Self {
        self.graph_resource = graph_resource.trim_end_matches('/').to_owned();
        self.management_resource = management_resource.trim_end_matches('/').to_owned();
        self
    }

    /// Custom URLs from a connection's stored [`Endpoints`]. `Endpoints` names no Management API
    /// host, so it is taken to be the origin of the Graph URL (the simulator serves both on one
    /// port).
    pub fn from_endpoints(endpoints: &Endpoints) -> Result<Self, M365Error> {
        let graph = checked_base("graph", &endpoints.graph)?;
        let management = origin_of(&graph).unwrap_or_else(|| graph.clone());
        Self::custom(&endpoints.login, &graph, &management)
    }

    /// A named preset. Fails with an error listing the valid names; `custom` needs URLs and is
    /// built with [`Cloud::custom`] or [`Cloud::from_endpoints`].
    pub fn preset_named(name: &str) -> Result<Self, M365Error> {
        match name.trim().to_ascii_lowercase().as_str() {
            "worldwide" | "" => Ok(Self::worldwide()),
            "gcc" => Ok(Self::gcc()),
            "gcc-high" | "gcchigh" => Ok(Self::gcc_high()),
            "dod" => Ok(Self::dod()),
            "china" => Ok(Self::china()),
            CUSTOM_CLOUD => Err(M365Error::Config {
                message: "cloud `custom` needs explicit endpoints (login and graph URLs)".to_owned(),
                fix: "set the connection's endpoints, or choose a preset".to_owned(),
            }),
            other => Err(M365Error::Config {
                message: format!("unknown cloud `{other}`"),
                fix: format!(
                    "use one of {}, or `{CUSTOM_CLOUD}` with endpoints",
                    CLOUD_PRESETS.join(", ")
                ),
            }),
        }
    }

    /// The cloud of a stored connection: the preset named by `cloud`, or, for `custom`, the given
    /// endpoints. Endpoints given with a preset name replace the preset's URLs but keep its token
    /// resources (a proxy in front of that cloud). Fails on an unknown name, or `custom` without
    /// endpoints.
    pub fn for_connection(cloud: &str, endpoints: Option<&Endpoints>) -> Result<Self, M365Error> {
        let is_custom = cloud.trim().eq_ignore_ascii_case(CUSTOM_CLOUD);
        match endpoints {
            Some(endpoints) if is_custom => Self::from_endpoints(endpoints),
            Some(endpoints) => {
                let preset = Self::preset_named(cloud)?;
                Ok(
                    Self::from_endpoints(endpoints)?
                        .with_resources(&preset.graph_resource, &preset.management_resource),
                )
            }
            None => Self::preset_named(cloud),
        }
    }

    /// The preset name, or `custom`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Entra ID authority without the tenant (`https://login.microsoftonline.com`).
    pub fn login(&self) -> &str {
        &self.login
    }

    /// Graph base including the version (`https://graph.microsoft.com/v1.0`).
    pub fn graph(&self) -> &str {
        &self.graph
    }

    /// Management Activity API host (`https://manage.office.com`).
    pub fn management(&self) -> &str {
        &self.management
    }

    /// The v2 token endpoint of a tenant: `{login}/{tenant}/oauth2/v2.0/token`
    /// (<https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow#get-a-token>).
    pub fn token_url(&self, tenant_id: &str) -> String {
        let tenant = percent_encoding::utf8_percent_encode(tenant_id.trim(), crate::graph::PATH_SEGMENT);
        format!("{}/{tenant}/oauth2/v2.0/token", self.login)
    }

    /// The resource (App ID URI) whose `/.default` scope grants Graph tokens
    /// (`https://graph.microsoft.us` in GCC High).
    pub fn graph_resource(&self) -> &str {
        &self.graph_resource
    }

    /// The resource whose `/.default` scope grants Management Activity API tokens.
    pub fn management_resource(&self) -> &str {
        &self.management_resource
    }

    /// The endpoints a connection record stores for this cloud.
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            login: self.login.clone(),
            graph: self.graph.clone(),
        }
    }
}

impl Default for Cloud {
    fn default() -> Self {
        Self::worldwide()
    }
}

impl fmt::Debug for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cloud")
            .field("name", &self.name)
            .field("login", &self.login)
            .field("graph", &self.graph)
            .field("management", &self.management)
            .field("graph_resource", &self.graph_resource)
            .field("management_resource", &self.management_resource)
            .finish()
    }
}

impl std::str::FromStr for Cloud {
    type Err = M365Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::preset_named(s)
    }
}

impl TryFrom<&Endpoints> for Cloud {
    type Error = M365Error;

    fn try_from(endpoints: &Endpoints) -> Result<Self, Self::Error> {
        Self::from_endpoints(endpoints)
    }
}

fn checked_base(what: &str, raw: &str) -> Result<String, M365Error> {
    let trimmed = raw.trim().trim_end_matches('/');
    match url::Url::parse(trimmed) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(trimmed.to_owned()),
        _ => Err(M365Error::Config {
            message: format!("the {what} URL `{raw}` is not an absolute http(s) URL"),
            fix: format!("give the {what} base URL in full, for example `https://graph.microsoft.com/v1.0`"),
        }),
    }
}

/// `scheme://host[:port]` of a URL.
pub(crate) fn origin_of(raw: &str) -> Option<String> {
    let u = url::Url::parse(raw).ok()?;
    let origin = u.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses_by_name_and_has_https_hosts() {
        for name in CLOUD_PRESETS {
            let cloud: Cloud = name.parse().unwrap();
            assert_eq!(cloud.name(), name);
            for url in [cloud.login(), cloud.graph(), cloud.management()] {
                assert!(url.starts_with("https://"), "{name}: {url}");
            }
            assert!(cloud.graph().ends_with("/v1.0"));
        }
    }

    #[test]
    fn gcc_high_and_dod_use_the_us_government_hosts() {
        let high = Cloud::gcc_high();
        assert_eq!(
            high.token_url("t1"),
            "https://login.microsoftonline.us/t1/oauth2/v2.0/token"
        );
        assert_eq!(high.graph_resource(), "https://graph.microsoft.us");
        assert_eq!(high.management_resource(), "https://manage.office365.us");
        let dod = Cloud::dod();
        assert_eq!(dod.graph(), "https://dod-graph.microsoft.us/v1.0");
        assert_eq!(dod.management(), "https://manage.protection.apps.mil");
        assert_eq!(Cloud::gcc().management(), "https://manage-gcc.office.com");
        assert_eq!(
            Cloud::china().graph_resource(),
            "https://microsoftgraph.chinacloudapi.cn"
        );
    }

    #[test]
    fn unknown_cloud_name_lists_the_valid_names() {
        let err = Cloud::preset_named("azure-germany").unwrap_err().to_string();
        assert!(err.contains("azure-germany"), "{err}");
        for name in CLOUD_PRESETS {
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn custom_cloud_from_endpoints_keeps_the_urls_and_uses_worldwide_resources() {
        let endpoints = Endpoints {
            login: "http://127.0.0.1:4000/".to_owned(),
            graph: "http://127.0.0.1:4000/v1.0/".to_owned(),
        };
        let cloud = Cloud::try_from(&endpoints).unwrap();
        assert_eq!(cloud.name(), "custom");
        assert_eq!(cloud.login(), "http://127.0.0.1:4000");
        assert_eq!(cloud.graph(), "http://127.0.0.1:4000/v1.0");
        assert_eq!(
            cloud.graph_resource(),
            "https://graph.microsoft.com",
            "a simulator fronts worldwide Graph"
        );
        assert_eq!(cloud.management_resource(), "https://manage.office.com");
        let proxied = cloud
            .clone()
            .with_resources("https://graph.microsoft.us/", "https://manage.office365.us");
        assert_eq!(proxied.graph_resource(), "https://graph.microsoft.us");
        assert_eq!(
            cloud.token_url("contoso"),
            "http://127.0.0.1:4000/contoso/oauth2/v2.0/token"
        );
        assert_eq!(cloud.endpoints().graph, "http://127.0.0.1:4000/v1.0");
    }

    #[test]
    fn preset_with_endpoints_is_a_proxy_keeping_the_preset_resources() {
        let endpoints = Endpoints {
            login: "https://login.proxy.example".to_owned(),
            graph: "https://graph.proxy.example/v1.0".to_owned(),
        };
        let cloud = Cloud::for_connection("gcc-high", Some(&endpoints)).unwrap();
        assert_eq!(cloud.graph(), "https://graph.proxy.example/v1.0");
        assert_eq!(cloud.graph_resource(), "https://graph.microsoft.us");
        assert!(Cloud::for_connection("nowhere", Some(&endpoints)).is_err());
        assert_eq!(Cloud::for_connection("dod", None).unwrap(), Cloud::dod());
    }

    #[test]
    fn custom_without_endpoints_and_relative_urls_are_rejected() {
        assert!(Cloud::for_connection("custom", None).is_err());
        assert!(Cloud::preset_named("custom").is_err());
        assert!(Cloud::custom("login", "/v1.0", "x").is_err());
    }
}
