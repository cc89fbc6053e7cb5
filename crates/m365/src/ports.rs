//! The core ports over Microsoft Graph.

use async_trait::async_trait;
use bytes::Bytes;
use filetrail_core::budget::Budget;
use filetrail_core::hashing::{ChunkSink, FileContent, ItemVersion, KeptVersion, StreamEnd};
use filetrail_core::model::{DeltaPage, DirectoryUser, DriveLookup};
use filetrail_core::ports::{DeltaError, Directory, DriveDelta, DriveFinder, ItemResolver, PortResult, UsersPage};
use filetrail_core::scope::{DirectoryGroup, GroupSelector, UserSelector};

use crate::content::{DownloadError, DownloadOutcome, DownloadRequest, FileVersion};
use crate::graph::GraphClient;

#[async_trait]
impl Directory for GraphClient {
    /// See [`GraphClient::users_page`]; errors carry their retry class and fix.
    async fn users_page(&self, link: Option<&str>) -> PortResult<UsersPage> {
        GraphClient::users_page(self, link).await.map_err(Into::into)
    }

    /// See [`GraphClient::find_users`]: `$filter` lookups in `$batch` of 20, one answer per
    /// selector in order.
    async fn find_users(&self, selectors: &[UserSelector]) -> PortResult<Vec<Vec<DirectoryUser>>> {
        GraphClient::find_users(self, selectors).await.map_err(Into::into)
    }

    /// See [`GraphClient::find_groups`]: `$filter` lookups in `$batch` of 20, one answer per
    /// selector in order.
    async fn find_groups(&self, selectors: &[GroupSelector]) -> PortResult<Vec<Vec<DirectoryGroup>>> {
        GraphClient::find_groups(self, selectors).await.map_err(Into::into)
    }

    /// See [`GraphClient::group_members_page`]: a deleted group fails with the code
    /// `group_not_found` (terminal), other errors carry their retry class and fix.
    async fn group_members_page(&self, group_id: &str, link: Option<&str>) -> PortResult<UsersPage> {
        GraphClient::group_members_page(self, group_id, link)
            .await
            .map_err(Into::into)
    }
}

#[async_trait]
impl DriveFinder for GraphClient {
    /// See [`GraphClient::user_drives`]: `$batch` of 20, one answer per user in order.
    async fn find_drives(&self, users: &[DirectoryUser]) -> PortResult<Vec<DriveLookup>> {
        self.user_drives(users).await.map_err(Into::into)
    }
}

#[async_trait]
impl DriveDelta for GraphClient {
    /// See [`GraphClient::delta_page`]: a 410 is [`DeltaError::ResyncRequired`] with the
    /// `Location` restart link.
    async fn delta_page(&self, drive_id: &str, link: Option<&str>) -> Result<DeltaPage, DeltaError> {
        GraphClient::delta_page(self, drive_id, link).await
    }
}

#[async_trait]
impl ItemResolver for GraphClient {
    /// See [`GraphClient::items_by_path`]: `$batch` of 20; absent paths are left out.
    async fn resolve_paths(&self, drive_id: &str, paths: &[String]) -> PortResult<Vec<(String, String)>> {
        let ids = self.items_by_path(drive_id, paths).await?;
        Ok(paths
            .iter()
            .zip(ids)
            .filter_map(|(path, id)| id.map(|id| (path.clone(), id)))
            .collect())
    }
}

#[async_trait]
impl FileContent for GraphClient {
    /// See [`GraphClient::item_info`]: `None` for a deleted item.
    async fn item_version(&self, drive_id: &str, item_id: &str) -> PortResult<Option<ItemVersion>> {
        Ok(self.item_info(drive_id, item_id).await?.map(|info| ItemVersion {
            ctag: info.version.ctag,
            size: info.version.size,
            modified_at: info.modified_at,
            is_file: info.is_file,
        }))
    }

    /// See [`GraphClient::download_from`]: follows the 302 without our token, resumes dropped
    /// connections with `Range`, refreshes an expired download URL, stops at the budget's
    /// deadline between chunks, and tells a version changed under the download apart.
    async fn stream_content(
        &self,
        drive_id: &str,
        item_id: &str,
        expected: &ItemVersion,
        sink: &mut dyn ChunkSink,
        budget: &dyn Budget,
    ) -> PortResult<StreamEnd> {
        let version = FileVersion {
            etag: None,
            ctag: expected.ctag.clone(),
            size: expected.size,
        };
        let request = DownloadRequest::new(drive_id, item_id).starting_at(sink.offset(), version);
        stream(self, request, sink, budget).await
    }

    /// See [`GraphClient::versions`].
    async fn versions(&self, drive_id: &str, item_id: &str) -> PortResult<Option<Vec<KeptVersion>>> {
        Ok(GraphClient::versions(self, drive_id, item_id).await?)
    }

    /// [`GraphClient::download_from`] of a previous version: through
    /// `…/versions/{id}/content`, resumed with `Range`, refreshed when its URL expires.
    async fn stream_previous(
        &self,
        drive_id: &str,
        item_id: &str,
        version: &KeptVersion,
        sink: &mut dyn ChunkSink,
        budget: &dyn Budget,
    ) -> PortResult<StreamEnd> {
        let mut request = DownloadRequest::new(drive_id, item_id).previous_version(&version.id, version.size);
        request.offset = sink.offset();
        stream(self, request, sink, budget).await
    }
}

/// Runs a download into the sink until the budget's deadline, as [`StreamEnd`] tells it.
async fn stream(
    client: &GraphClient,
    mut request: DownloadRequest,
    sink: &mut dyn ChunkSink,
    budget: &dyn Budget,
) -> PortResult<StreamEnd> {
    if let Some(at) = budget.stop_at() {
        request = request.until(at);
    }
    let mut forward = |chunk: Bytes| sink.accept(chunk);
    match client.download_from(&request, &mut forward).await {
        Ok(download) => Ok(match download.outcome {
            DownloadOutcome::Complete { .. } => StreamEnd::Complete,
            DownloadOutcome::Stopped { .. } => StreamEnd::OutOfTime,
            DownloadOutcome::NotFound | DownloadOutcome::NotAFile => StreamEnd::Gone,
            DownloadOutcome::Changed { .. } => StreamEnd::Changed,
        }),
        Err(DownloadError::Service(e)) => Err(e.into()),
        Err(DownloadError::Sink(e)) => Err(e),
    }
}

#[async_trait]
impl filetrail_core::ports::PermissionReader for GraphClient {
    /// [`GraphClient::items_permissions`]: `$batch` envelopes of 20, throttled entries retried.
    async fn permissions(
        &self,
        items: &[(String, String)],
    ) -> PortResult<
        Vec<(
            (String, String),
            Option<Vec<filetrail_core::exposure::ListedPermission>>,
        )>,
    > {
        let listed = self.items_permissions(items).await?;
        Ok(listed
            .into_iter()
            .map(|(key, perms)| (key, perms.map(|p| p.iter().map(listed_permission).collect())))
            .collect())
    }
}

/// A Graph permission as the domain judges it: the link's scope and URL, and every identity it
/// names (granted, on the link, or invited).
pub fn listed_permission(p: &crate::permissions::ItemPermission) -> filetrail_core::exposure::ListedPermission {
    let mut grantees: Vec<(Option<String>, Option<String>)> = (p.grantees.iter())
        .map(|g| (g.display_name.clone(), g.email.clone()))
        .collect();
    if let Some(email) = &p.invitation_email
        && !grantees
            .iter()
            .any(|(_, e)| e.as_deref().is_some_and(|e| e.eq_ignore_ascii_case(email)))
    {
        grantees.push((None, Some(email.clone())));
    }
    filetrail_core::exposure::ListedPermission {
        id: p.id.clone(),
        roles: p.roles.clone(),
        link_scope: p.link.as_ref().map(|l| l.scope.as_str().to_owned()),
        link_url: p.link.as_ref().and_then(|l| l.web_url.clone()),
        grantees,
        expires_at: p.expires_at,
        inherited: p.inherited,
    }
}
