//! The core ports over Microsoft Graph.

use async_trait::async_trait;
use filetrail_core::model::{DeltaPage, DirectoryUser, DriveLookup};
use filetrail_core::ports::{DeltaError, Directory, DriveDelta, DriveFinder, PortResult, UsersPage};
use filetrail_core::scope::{DirectoryGroup, GroupSelector, UserSelector};

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
