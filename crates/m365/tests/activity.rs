//! The Management Activity API client against m365-sim over real HTTP: paging, subscriptions,
//! throttling (`AF429` as 403 and as 429), server errors, the audit log being off, a missing
//! permission, expired content, and `PublisherIdentifier` on every request.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, TimeDelta, Utc};
use filetrail_core::RetryClass;
use filetrail_core::model::Endpoints;
use filetrail_m365::activity::{AUDIT_SHAREPOINT, ActivityClient, SubscriptionOutcome};
use filetrail_m365::error::{MGMT_AUDIT_LOG_DISABLED, MGMT_CONTENT_EXPIRED, MGMT_PERMISSION_MISSING};
use filetrail_m365::{
    ClientSecret, Cloud, Credentials, HttpTimeouts, RetryPolicy, ServiceErrorKind, http_client, is_connection_problem,
};
use m365_sim::{ActivityConfig, ContentType, SimConfig, SimHandle};
use serde_json::{Value, json};

const CONNECTION: &str = "sim-tenant";

async fn sim(activity: ActivityConfig) -> SimHandle {
    m365_sim::spawn(SimConfig {
        users: 5,
        groups: 2,
        activity,
        ..SimConfig::with_seed(77)
    })
    .await
    .unwrap()
}

fn quiet() -> ActivityConfig {
    ActivityConfig {
        duplicate_rate: 0.0,
        late_rate: 0.0,
        ..ActivityConfig::default()
    }
}

fn client_with(sim: &SimHandle, policy: RetryPolicy) -> ActivityClient {
    // As the stack wires it: the Management API host is the Graph URL's origin.
    let cloud = Cloud::from_endpoints(&Endpoints {
        login: sim.login_url(),
        graph: sim.graph_url(),
    })
    .unwrap();
    let credentials = Credentials {
        tenant_id: sim.tenant_id().to_owned(),
        client_id: sim.client_id().to_owned(),
        secret: ClientSecret::new(sim.client_secret()),
    };
    let http = http_client(HttpTimeouts::default()).unwrap();
    ActivityClient::connect(http, &cloud, credentials, CONNECTION, policy).unwrap()
}

fn client(sim: &SimHandle) -> ActivityClient {
    client_with(sim, RetryPolicy::fast())
}

fn record(i: usize) -> Value {
    json!({
        "Id": format!("00000000-0000-4000-8000-{i:012}"),
        "CreationTime": "2026-11-30T05:06:07",
        "Operation": "FileModified",
        "RecordType": 6,
        "Workload": "OneDrive",
        "UserId": "adele@contoso.onmicrosoft.com",
    })
}

/// Publishes `n` one-record blobs that became available over the last hour.
fn publish(sim: &SimHandle, n: usize) -> Vec<String> {
    let audit = sim.audit();
    let now = audit.now();
    (0..n)
        .map(|i| {
            let at = now - TimeDelta::minutes(59) + TimeDelta::seconds(i as i64 * 10);
            audit
                .publish_blob(ContentType::SharePoint, vec![record(i)], Some(at))
                .content_id
        })
        .collect()
}

fn last_hour(sim: &SimHandle) -> (DateTime<Utc>, DateTime<Utc>) {
    let now = sim.audit().now();
    (now - TimeDelta::hours(1), now + TimeDelta::minutes(1))
}

#[tokio::test]
async fn lists_every_blob_across_several_pages_and_fetches_each_as_raw_bytes() -> Result<()> {
    let sim = sim(ActivityConfig {
        content_page_size: 3,
        ..quiet()
    })
    .await;
    let published = publish(&sim, 10);
    let activity = client(&sim);
    assert_eq!(
        activity.ensure_subscription(AUDIT_SHAREPOINT).await?,
        SubscriptionOutcome::Started
    );

    let (start, end) = last_hour(&sim);
    let blobs = activity.list_content(AUDIT_SHAREPOINT, start, end).await?;

    let ids: Vec<&str> = blobs.iter().map(|b| b.content_id.as_str()).collect();
    assert_eq!(ids, published.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(sim.stats().activity.content_list, 4, "10 blobs at 3 per page");
    assert_eq!(sim.stats().activity.content_list_next_page, 3);
    let truth = sim.audit().blobs();
    for (blob, expected) in blobs.iter().zip(&truth) {
        assert!(blob.content_uri.contains('$'));
        let bytes = activity.fetch_blob(&blob.content_uri).await?;
        assert_eq!(
            String::from_utf8(bytes.to_vec())?,
            expected.body,
            "the raw bytes, untouched"
        );
    }
    assert_eq!(sim.stats().activity.blob_served, 10);
    Ok(())
}

#[tokio::test]
async fn pages_are_followed_through_the_faq_spelling_next_page_url_too() -> Result<()> {
    let sim = sim(ActivityConfig {
        content_page_size: 2,
        next_page_header: "NextPageUrl".to_owned(),
        ..quiet()
    })
    .await;
    let published = publish(&sim, 5);
    let activity = client(&sim);
    let (start, end) = last_hour(&sim);
    let blobs = activity.list_content(AUDIT_SHAREPOINT, start, end).await?;
    assert_eq!(blobs.len(), published.len());
    assert_eq!(sim.stats().activity.content_list_next_page, 2);
    Ok(())
}

#[tokio::test]
async fn ensure_subscription_starts_once_and_then_only_lists() -> Result<()> {
    let sim = sim(quiet()).await;
    let activity = client(&sim);
    assert_eq!(
        activity.ensure_subscription(AUDIT_SHAREPOINT).await?,
        SubscriptionOutcome::Started
    );
    assert_eq!(
        activity.ensure_subscription(AUDIT_SHAREPOINT).await?,
        SubscriptionOutcome::AlreadyEnabled
    );
    assert_eq!(
        activity.ensure_subscription(AUDIT_SHAREPOINT).await?,
        SubscriptionOutcome::AlreadyEnabled
    );
    let stats = sim.stats().activity;
    assert_eq!((stats.subscriptions_start, stats.subscriptions_list), (1, 3));
    assert_eq!(stats.subscriptions_start_repeated, 0, "never a repeated start");

    assert!(sim.audit().disable_subscription(ContentType::SharePoint));
    assert_eq!(
        activity.ensure_subscription(AUDIT_SHAREPOINT).await?,
        SubscriptionOutcome::Started
    );
    assert_eq!(
        sim.audit().subscription(ContentType::SharePoint),
        m365_sim::activity::SubscriptionState::Enabled
    );
    Ok(())
}

#[tokio::test]
async fn listing_starts_a_missing_or_disabled_subscription_and_asks_again() -> Result<()> {
    let sim = sim(quiet()).await;
    publish(&sim, 2);
    let activity = client(&sim);
    let (start, end) = last_hour(&sim);

    let blobs = activity.list_content(AUDIT_SHAREPOINT, start, end).await?;
    assert_eq!(blobs.len(), 2, "AF20022, start, same page again");
    assert_eq!(sim.stats().activity.af20022, 1);

    assert!(sim.audit().disable_subscription(ContentType::SharePoint));
    let blobs = activity.list_content(AUDIT_SHAREPOINT, start, end).await?;
    assert_eq!(blobs.len(), 2, "AF20023, start, same page again");
    let stats = sim.stats().activity;
    assert_eq!((stats.af20023, stats.subscriptions_start), (1, 2));
    Ok(())
}

#[tokio::test]
async fn af429_as_403_with_a_single_quoted_body_is_retried_as_throttling() -> Result<()> {
    let sim = sim(ActivityConfig {
        content_page_size: 2,
        af429_rate: 0.4,
        af429_as_429_share: 0.0,
        ..quiet()
    })
    .await;
    publish(&sim, 7);
    let activity = client(&sim);
    activity.ensure_subscription(AUDIT_SHAREPOINT).await?;
    let (start, end) = last_hour(&sim);
    let blobs = activity.list_content(AUDIT_SHAREPOINT, start, end).await?;
    assert_eq!(blobs.len(), 7);
    for blob in &blobs {
        activity.fetch_blob(&blob.content_uri).await?;
    }
    let stats = sim.stats().activity;
    assert!(stats.af429 > 0, "{stats:?}");
    assert_eq!(stats.af429_as_429, 0);
    assert_eq!(
        activity.stats().throttled,
        stats.af429,
        "every 403 AF429 counted as throttling"
    );
    Ok(())
}

#[tokio::test]
async fn af429_as_429_honours_retry_after_and_af50000_is_retried() -> Result<()> {
    let sim = sim(ActivityConfig {
        af429_rate: 0.3,
        af429_as_429_share: 1.0,
        retry_after_secs: (0.05, 0.1),
        af50000_rate: 0.2,
        ..quiet()
    })
    .await;
    publish(&sim, 5);
    let activity = client(&sim);
    let started = std::time::Instant::now();
    activity.ensure_subscription(AUDIT_SHAREPOINT).await?;
    let (start, end) = last_hour(&sim);
    for blob in activity.list_content(AUDIT_SHAREPOINT, start, end).await? {
        activity.fetch_blob(&blob.content_uri).await?;
    }
    let stats = sim.stats().activity;
    assert!(stats.af429_as_429 > 0 && stats.af50000 > 0, "{stats:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(50) * u32::try_from(stats.af429_as_429)?,
        "each 429 waited its Retry-After: {:?} for {stats:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn throttling_that_never_ends_gives_up_with_af429_naming_our_publisher() -> Result<()> {
    let sim = sim(ActivityConfig {
        af429_rate: 1.0,
        af429_as_429_share: 0.0,
        ..quiet()
    })
    .await;
    let policy = RetryPolicy {
        max_attempts: 3,
        ..RetryPolicy::fast()
    };
    let publisher = "46b472a7-c68e-4adf-8ade-3db49497518e";
    let activity = client_with(&sim, policy).with_publisher_identifier(publisher);
    let err = activity.list_subscriptions().await.unwrap_err();
    assert_eq!(err.code(), "AF429");
    assert_eq!(err.service().unwrap().kind, ServiceErrorKind::Throttled);
    assert!(err.to_string().contains(&format!("PublisherId={publisher}")), "{err}");
    assert_eq!(sim.stats().activity.af429, 3);
    Ok(())
}

#[tokio::test]
async fn a_tenant_without_audit_logging_gets_an_error_that_says_to_turn_it_on() -> Result<()> {
    let sim = sim(ActivityConfig {
        audit_log_enabled: false,
        ..quiet()
    })
    .await;
    let activity = client(&sim);
    let err = activity.ensure_subscription(AUDIT_SHAREPOINT).await.unwrap_err();

    assert_eq!(err.code(), MGMT_AUDIT_LOG_DISABLED);
    assert_eq!(err.service().unwrap().kind, ServiceErrorKind::AuditLogDisabled);
    assert_eq!(err.retry_class(), RetryClass::Terminal);
    assert!(is_connection_problem(&err.code()));
    let text = err.to_string();
    assert!(
        text.contains(&format!("audit logging is turned off for tenant {}", sim.tenant_id())),
        "{text}"
    );
    let fix = err.fix().unwrap();
    assert!(fix.contains("turn on audit logging in Microsoft Purview"), "{fix}");
    assert!(fix.contains("up to 60 minutes"), "{fix}");
    assert_eq!(sim.stats().activity.audit_log_disabled, 1, "not retried");

    sim.audit().set_audit_log_enabled(true);
    assert_eq!(
        activity.ensure_subscription(AUDIT_SHAREPOINT).await?,
        SubscriptionOutcome::Started
    );
    Ok(())
}

#[tokio::test]
async fn a_missing_activity_feed_read_permission_says_which_permission_to_grant() -> Result<()> {
    let sim = sim(ActivityConfig {
        activity_feed_read_granted: false,
        ..quiet()
    })
    .await;
    let activity = client(&sim);
    let err = activity.list_subscriptions().await.unwrap_err();

    assert_eq!(err.code(), MGMT_PERMISSION_MISSING);
    assert_eq!(err.retry_class(), RetryClass::Terminal);
    assert!(is_connection_problem(&err.code()));
    let fix = err.fix().unwrap();
    for part in [
        "ActivityFeed.Read",
        "Office 365 Management APIs",
        "Application permissions",
        "admin consent",
    ] {
        assert!(fix.contains(part), "{part} in {fix}");
    }
    assert_eq!(sim.stats().activity.af10001, 2, "one fresh token tried, then the error");

    // Consent granted: the same client recovers (the refused token is not kept).
    sim.audit().set_activity_feed_read_granted(true);
    activity.list_subscriptions().await?;
    Ok(())
}

#[tokio::test]
async fn expired_content_is_a_distinct_terminal_error() -> Result<()> {
    let sim = sim(quiet()).await;
    publish(&sim, 1);
    let activity = client(&sim);
    activity.ensure_subscription(AUDIT_SHAREPOINT).await?;
    let (start, end) = last_hour(&sim);
    let blob = activity.list_content(AUDIT_SHAREPOINT, start, end).await?.remove(0);

    sim.audit().advance_clock(Duration::from_secs(7 * 24 * 3600));
    let err = activity.fetch_blob(&blob.content_uri).await.unwrap_err();
    assert_eq!(err.code(), MGMT_CONTENT_EXPIRED);
    assert_eq!(err.service().unwrap().kind, ServiceErrorKind::ContentExpired);
    assert_eq!(err.retry_class(), RetryClass::Terminal);
    assert!(!is_connection_problem(&err.code()));
    assert_eq!(sim.stats().activity.af20051, 1, "not retried");
    Ok(())
}

#[tokio::test]
async fn publisher_identifier_is_sent_on_every_request_including_next_pages_and_blobs() -> Result<()> {
    let sim = sim(ActivityConfig {
        content_page_size: 2,
        af429_rate: 0.2,
        ..quiet()
    })
    .await;
    publish(&sim, 5);
    let activity = client(&sim);
    assert_eq!(
        activity.publisher_identifier(),
        sim.tenant_id(),
        "defaults to the connection's tenant"
    );
    activity.ensure_subscription(AUDIT_SHAREPOINT).await?;
    let (start, end) = last_hour(&sim);
    for blob in activity.list_content(AUDIT_SHAREPOINT, start, end).await? {
        activity.fetch_blob(&blob.content_uri).await?;
    }
    let stats = sim.stats().activity;
    assert!(stats.content_list_next_page >= 2 && stats.blob >= 5, "{stats:?}");
    assert_eq!(stats.without_publisher_identifier, 0, "{stats:?}");
    assert_eq!(stats.with_publisher_identifier, stats.requests);
    Ok(())
}

#[tokio::test]
async fn links_to_other_hosts_and_windows_over_24_hours_are_refused_without_a_request() -> Result<()> {
    let sim = sim(quiet()).await;
    let activity = client(&sim);
    let err = activity
        .fetch_blob("https://attacker.example/api/v1.0/x/activity/feed/audit/1$1$a$b$04")
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_config");
    let now = Utc::now();
    let err = activity
        .list_content(AUDIT_SHAREPOINT, now - TimeDelta::hours(25), now)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_config");
    assert_eq!(sim.stats().activity.requests, 0);
    Ok(())
}

#[tokio::test]
async fn fetched_blob_bytes_feed_the_core_normaliser_as_they_are() -> Result<()> {
    use filetrail_core::audit::{NormaliseContext, TrustedDomains, normalise_blob};

    let sim = sim(quiet()).await;
    let good = json!({
        "Id": "5b2d0c39-0f8e-4b43-9c1e-3f1d8d0a7e11",
        "RecordType": 6,
        "CreationTime": "2026-11-30T05:06:07",
        "Operation": "FileModified",
        "OrganizationId": sim.tenant_id(),
        "UserType": 0,
        "UserKey": "i:0h.f|membership|1003200096971f55@live.com",
        "Workload": "OneDrive",
        "UserId": "adele@contoso.onmicrosoft.com",
        "ClientIP": "203.0.113.7",
        "ItemType": "File",
        "ObjectId": "https://contoso-my.sharepoint.com/personal/adele_contoso_onmicrosoft_com/Documents/Report.docx",
        "SiteUrl": "https://contoso-my.sharepoint.com/personal/adele_contoso_onmicrosoft_com/",
        "SourceRelativeUrl": "Documents",
        "SourceFileName": "Report.docx",
        "SourceFileExtension": "docx",
    });
    // A OneDrive file record without `CreationTime` and `UserId`.
    let malformed = json!({"Id": "0d9f4f7e-1c0b-4b8e-9a57-000000000005", "RecordType": 6, "Workload": "OneDrive", "Operation": "FileModified"});
    let now = sim.audit().now();
    sim.audit().publish_blob(
        ContentType::SharePoint,
        vec![good, malformed],
        Some(now - TimeDelta::minutes(5)),
    );
    let activity = client(&sim);
    let (start, end) = last_hour(&sim);
    let blob = activity.list_content(AUDIT_SHAREPOINT, start, end).await?.remove(0);
    let bytes = activity.fetch_blob(&blob.content_uri).await?;

    let ctx = NormaliseContext::new(TrustedDomains::new(["contoso.onmicrosoft.com"]), Utc::now());
    let outcome = normalise_blob(&bytes, &ctx).map_err(|q| anyhow::anyhow!("{q:?}"))?;
    assert_eq!(outcome.records(), 2);
    assert_eq!(outcome.events.len(), 1, "{outcome:?}");
    assert_eq!(
        outcome.quarantined.len(),
        1,
        "the malformed record is quarantined, not lost"
    );
    Ok(())
}

#[tokio::test]
async fn the_core_activity_feed_port_pages_and_fetches_through_the_client() -> Result<()> {
    use filetrail_core::ports::ActivityFeed;

    let sim = sim(ActivityConfig {
        content_page_size: 2,
        ..quiet()
    })
    .await;
    let published = publish(&sim, 3);
    let feed: &dyn ActivityFeed = &client(&sim);
    feed.ensure_subscription(AUDIT_SHAREPOINT).await?;
    let (start, end) = last_hour(&sim);
    let first = feed.content_page(AUDIT_SHAREPOINT, start, end, None).await?;
    let next = first.next_page.clone().expect("a second page");
    let second = feed.content_page(AUDIT_SHAREPOINT, start, end, Some(&next)).await?;
    assert!(second.next_page.is_none());
    let ids: Vec<String> = first
        .blobs
        .iter()
        .chain(&second.blobs)
        .map(|b| b.content_id.clone())
        .collect();
    assert_eq!(ids, published);
    assert!(first.blobs[0].content_expiration.is_some());
    let bytes = feed.fetch_blob(&second.blobs[0].content_uri).await?;
    assert!(bytes.starts_with(b"[{"));

    sim.audit().advance_clock(Duration::from_secs(8 * 24 * 3600));
    let err = feed.fetch_blob(&second.blobs[0].content_uri).await.unwrap_err();
    assert_eq!(
        (err.class, err.code.as_str()),
        (RetryClass::Terminal, MGMT_CONTENT_EXPIRED)
    );
    Ok(())
}
