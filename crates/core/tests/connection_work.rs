//! The one rule for deauthorized connections: no work of any kind, and a reason that says how to
//! restart it.

use chrono::Utc;
use filetrail_core::model::{Connection, ConnectionKind, ConnectionState};

fn connection(state: ConnectionState) -> Connection {
    Connection {
        id: "contoso".into(),
        kind: ConnectionKind::Cloud,
        tenant_id: "t".into(),
        client_id: "c".into(),
        secret_id: "filetrail/contoso/app".into(),
        cloud: "worldwide".into(),
        endpoints: None,
        trusted_domains: vec![],
        drive_cap: 10,
        state,
        last_error: None,
        last_discovery: None,
        created_at: Utc::now(),
        write_app: None,
    }
}

#[test]
fn an_active_connection_accepts_work() {
    let c = connection(ConnectionState::Active);
    assert!(c.accepts_work());
    assert_eq!(c.why_no_work(), None);
}

#[test]
fn a_deauthorized_connection_gets_no_work_and_the_reason_names_resume() {
    let c = connection(ConnectionState::Deauthorized);
    assert!(!c.accepts_work());
    let why = c.why_no_work().unwrap_or_default();
    assert!(why.contains("deauthorized"), "{why}");
    assert!(why.contains("filetrail connection resume contoso"), "{why}");
}

#[test]
fn a_removed_connection_gets_no_work_and_the_reason_names_purge() {
    let c = connection(ConnectionState::Removed);
    assert!(!c.accepts_work());
    let why = c.why_no_work().unwrap_or_default();
    assert!(
        why.contains("removed") && why.contains("connection remove contoso --purge"),
        "{why}"
    );
    assert_eq!(
        serde_json::to_value(ConnectionState::Removed).ok(),
        Some("removed".into())
    );
}

#[test]
fn records_of_the_shared_app_write_mode_read_as_read_only() {
    // Before write mode had its own app, a record said `"write_mode": true` and revoke used the
    // connection's (pipeline's) app: such a record must not keep write access.
    let mut doc = serde_json::to_value(connection(ConnectionState::Active)).unwrap_or_default();
    if let Some(map) = doc.as_object_mut() {
        map.insert("write_mode".into(), true.into());
    }
    let c: Connection = serde_json::from_value(doc).unwrap_or_else(|e| panic!("{e}"));
    assert!(!c.write_mode() && c.write_app.is_none());
}
