//! The `filetrail` binary as an admin runs it, against template.yaml provisioned on moto.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use filetrail_aws::moto::MotoServer;
use filetrail_aws::provision::{Provisioned, provision};
use filetrail_aws::state::DynamoStateStore;
use filetrail_aws::template::Template;
use filetrail_cli::local::{Runner, RunnerOptions, ScheduleMode};
use filetrail_cli::pipeline::{APPLY_SCOPE_FUNCTION, LocalPipeline};
use filetrail_core::model::ConnectionError;
use filetrail_core::ports::{ConnectionStore, ScopeStore};
use filetrail_core::scope::{ScopeEntry, ScopeKind, UserSelector};

struct Deployment {
    moto: MotoServer,
    env: Vec<(String, String)>,
    state_table: String,
    template: Template,
    provisioned: Provisioned,
}

impl Deployment {
    async fn start(stack: &str) -> Deployment {
        let moto = MotoServer::start().await.unwrap();
        let sdk = moto.sdk_config().await;
        let template = Template::from_path(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml")).unwrap();
        let provisioned = provision(&sdk, &template, stack).await.unwrap();
        let settings = provisioned.cli_env(&template).unwrap();
        let state_table = settings["FILETRAIL_STATE_TABLE"].clone();
        let mut env: Vec<(String, String)> = settings.into_iter().collect();
        for (k, v) in [
            ("AWS_ENDPOINT_URL", moto.endpoint()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ] {
            env.push((k.to_owned(), v));
        }
        Deployment {
            moto,
            env,
            state_table,
            template,
            provisioned,
        }
    }

    /// Runs `filetrail ARGS` with `stdin`; returns (success, stdout, stderr).
    fn run(&self, args: &[&str], stdin: &str) -> (bool, String, String) {
        let (code, out, err) = self.run_code(args, stdin);
        (code == Some(0), out, err)
    }

    /// Like [`Self::run`], with the exit code (`None` if killed by a signal).
    fn run_code(&self, args: &[&str], stdin: &str) -> (Option<i32>, String, String) {
        let mut child = self.spawn(args);
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }

    /// Registers cloud connection `contoso` without checking its made-up credentials.
    fn register_contoso(&self) {
        let (ok, out, err) = self.run(&ADD_CONTOSO, "s");
        assert!(ok, "{out}{err}");
    }

    /// Runs `filetrail ARGS` with its output going to a reader that has already stopped
    /// reading (`filetrail ARGS | head -0`).
    fn run_into_closed_pipe(&self, args: &[&str]) -> std::process::Output {
        let mut child = self.spawn(args);
        drop(child.stdin.take());
        drop(child.stdout.take());
        child.wait_with_output().unwrap()
    }

    fn spawn(&self, args: &[&str]) -> std::process::Child {
        Command::new(env!("CARGO_BIN_EXE_filetrail"))
            .args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Runs `filetrail ARGS` while the real apply-scope function serves the scope queue, as it
    /// would in AWS; returns (exit code, stdout, stderr).
    async fn run_with_apply_scope(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let sdk = self.moto.sdk_config().await;
        let pipeline = LocalPipeline::new(&sdk, &self.template, &self.provisioned, &HashMap::new()).unwrap();
        let functions: HashMap<_, _> = pipeline
            .functions()
            .into_iter()
            .filter(|(id, _)| id == APPLY_SCOPE_FUNCTION)
            .collect();
        let options = RunnerOptions {
            schedules: ScheduleMode::OnDemand,
            until_idle: Some(Duration::from_millis(300)),
            receive_wait: Duration::from_secs(1),
            ..RunnerOptions::default()
        };
        let runner = Runner::new(&sdk, &self.template, &self.provisioned, functions, options).unwrap();
        let child = self.spawn(args);
        let waiting = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap());
        while !waiting.is_finished() {
            runner.run().await;
        }
        let out = waiting.await.unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }

    async fn state(&self) -> DynamoStateStore {
        DynamoStateStore::new(
            aws_sdk_dynamodb::Client::new(&self.moto.sdk_config().await),
            self.state_table.clone(),
        )
    }
}

const TENANT: &str = "0f5e2b4a-1111-4222-8333-944445555666";

/// `connection add contoso` for [`TENANT`], without checking the made-up credentials.
const ADD_CONTOSO: [&str; 8] = [
    "connection",
    "add",
    "contoso",
    "--tenant-id",
    TENANT,
    "--client-id",
    "app-1",
    "--skip-checks",
];

#[tokio::test]
async fn a_tenant_registers_once_per_kind_with_its_secret_from_stdin() {
    let d = Deployment::start("cmd-add").await;
    let (ok, out, err) = d.run(&ADD_CONTOSO, "s3cr3t-value\n");
    assert!(ok, "{err}");
    assert!(out.contains("Registered cloud connection \"contoso\""), "{out}");
    assert!(
        !out.contains("s3cr3t-value") && !err.contains("s3cr3t-value"),
        "the secret is never printed"
    );

    let again = [
        "connection",
        "add",
        "contoso-2",
        "--tenant-id",
        TENANT,
        "--client-id",
        "app-1",
        "--skip-checks",
    ];
    let (ok, _, err) = d.run(&again, "other");
    assert!(!ok);
    assert!(
        err.contains("already registered") && err.contains("\"contoso\""),
        "names the existing one: {err}"
    );

    // The same tenant as an email connection is a different registration.
    let email = [
        "connection",
        "add",
        "contoso-mail",
        "--kind",
        "email",
        "--tenant-id",
        TENANT,
        "--client-id",
        "app-1",
        "--skip-checks",
    ];
    assert!(d.run(&email, "s").0);

    let (ok, _, err) = d.run(
        &["connection", "add", "Bad Id", "--tenant-id", "t2", "--client-id", "c"],
        "s",
    );
    assert!(!ok && err.contains("\"Bad Id\"") && err.contains("lowercase"), "{err}");
    let (ok, _, err) = d.run(
        &["connection", "add", "empty", "--tenant-id", "t3", "--client-id", "c"],
        "  \n",
    );
    assert!(!ok && err.contains("client secret is empty"), "{err}");
}

#[tokio::test]
async fn status_shows_drive_counts_and_the_current_error_with_its_fix() {
    let d = Deployment::start("cmd-status").await;
    d.register_contoso();
    let problem = ConnectionError {
        code: "AADSTS7000215".into(),
        message: "Invalid client secret provided.".into(),
        fix: "create a new client secret and store it with `filetrail connection set-secret contoso`".into(),
        at: chrono::Utc::now(),
    };
    d.state()
        .await
        .set_connection_error("contoso", Some(&problem))
        .await
        .unwrap();

    let (ok, out, err) = d.run(&["status"], "");
    assert!(ok, "{err}");
    assert!(
        out.contains("0 monitored") && out.contains("without OneDrive  0 users"),
        "{out}"
    );
    assert!(
        out.contains("AADSTS7000215") && out.contains("filetrail connection set-secret contoso"),
        "{out}"
    );

    let (ok, out, _) = d.run(&["status", "contoso", "--json"], "");
    assert!(ok);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json[0]["connection"], "contoso");
    assert_eq!(json[0]["error"]["code"], "AADSTS7000215");
    assert_eq!(json[0]["drives"]["indexed"], 0);

    let (ok, _, err) = d.run(&["status", "nope"], "");
    assert!(!ok && err.contains("no connection named \"nope\""), "{err}");

    // A new secret starts a discovery run that will clear the error once the token works.
    let (ok, out, err) = d.run(&["connection", "set-secret", "contoso", "--skip-checks"], "new-secret");
    assert!(ok, "{err}");
    assert!(out.contains("started a discovery run"), "{out}");
}

#[test]
fn without_settings_the_cli_names_the_missing_variable_and_how_to_set_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_filetrail"))
        .arg("status")
        .env_clear()
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("FILETRAIL_STATE_TABLE") && err.contains(".local/stack.env"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_upload_waits_for_apply_scope_and_a_rejected_file_keeps_the_scope() {
    let d = Deployment::start("cmd-scope").await;
    d.register_contoso();
    let dir = std::env::temp_dir().join(format!("filetrail-scope-cmd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // Kind guessed from the header; a duplicate and a formula-like cell are reported, not run.
    let list = dir.join("finance.csv");
    std::fs::write(
        &list,
        "UserPrincipalName,Title\nada@contoso.com,CFO\nbob@contoso.com,Analyst\nADA@contoso.com,CFO\n\"=cmd|' /C calc'!A0\",x\n",
    )
    .unwrap();
    let (code, out, err) = d
        .run_with_apply_scope(&["scope", "upload", "contoso", list.to_str().unwrap(), "--wait", "60"])
        .await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("Accepted scoping/contoso/users.csv: 2 users entries (1 duplicate rows counted once)"),
        "{out}"
    );
    assert!(
        out.contains("line     5") && out.contains("=cmd|"),
        "the formula row is listed: {out}"
    );
    assert!(out.contains("Result file: scoping/contoso/results/"), "{out}");
    assert!(err.contains("waiting for apply-scope"), "{err}");

    let scope = d.state().await.scope("contoso").await.unwrap().unwrap();
    assert_eq!(scope.kind, ScopeKind::Users);
    assert_eq!(
        scope.entries,
        [
            ScopeEntry::User(UserSelector::Email("ada@contoso.com".into())),
            ScopeEntry::User(UserSelector::Email("bob@contoso.com".into())),
        ]
    );

    // A header-only file is rejected as a whole: exit code 2, the old scope stays.
    let empty = dir.join("users-empty.csv");
    std::fs::write(&empty, "Email Address\n").unwrap();
    let (code, out, err) = d
        .run_with_apply_scope(&["scope", "upload", "contoso", empty.to_str().unwrap(), "--json"])
        .await;
    assert_eq!(code, Some(2), "{out}{err}");
    let result: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(result["accepted"], false);
    assert!(result["error"].as_str().is_some_and(|e| !e.is_empty()), "{result}");
    assert_eq!(d.state().await.scope("contoso").await.unwrap(), Some(scope));

    let (ok, out, err) = d.run(&["scope", "show", "contoso"], "");
    assert!(ok, "{err}");
    assert!(
        out.contains("ada@contoso.com") && out.contains("bob@contoso.com"),
        "{out}"
    );
    assert!(
        out.contains("Rejected") || out.contains("rejected"),
        "the last upload is shown: {out}"
    );
    let (ok, out, _) = d.run(&["scope", "show", "contoso", "--json"], "");
    assert!(ok);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["scope"]["kind"], "users");
    assert_eq!(doc["last_upload"]["accepted"], false);

    // Errors name the bad value and the fix.
    let (ok, _, err) = d.run(&["scope", "upload", "nope", list.to_str().unwrap()], "");
    assert!(!ok && err.contains("no connection named \"nope\""), "{err}");
    let unclear = dir.join("list.csv");
    std::fs::write(&unclear, "Email\nada@contoso.com\n").unwrap();
    let (ok, _, err) = d.run(&["scope", "upload", "contoso", unclear.to_str().unwrap()], "");
    assert!(!ok && err.contains("--kind users or --kind groups"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A file event as ingest-activity stores it.
fn file_event(id: &str, event_type: &str, operation: &str, minutes_ago: i64) -> filetrail_core::events::EventRecord {
    let at = chrono::Utc::now() - chrono::Duration::minutes(minutes_ago);
    let event: filetrail_core::audit::FileEvent = serde_json::from_value(serde_json::json!({
        "id": id,
        "event_type": event_type,
        "low_signal": false,
        "operation": operation,
        "record_type": 6,
        "item_kind": "file",
        "actor": {"id": "megan@contoso.com", "kind": "user", "upn": "megan@contoso.com"},
        "owner_upn": "megan@contoso.com",
        "file_name": "Q3 forecast.xlsx",
        "path": "/Reports/Q3 forecast.xlsx",
        "extension": "xlsx",
        "drive_id": "b!drive-1",
        "item_id": "01ITEM",
        "observed_at": at,
        "inserted_at": at,
    }))
    .unwrap();
    filetrail_core::events::EventRecord::onedrive("contoso", event)
}

#[tokio::test]
async fn file_shows_the_row_its_digests_and_its_events_newest_first_and_events_lists_the_newest() {
    use filetrail_core::events::{FileHashes, HashOutcome};
    use filetrail_core::ports::{EventStore as _, InventoryHashes as _, InventoryStore as _};

    let d = Deployment::start("cmd-file").await;
    d.register_contoso();
    let sdk = d.moto.sdk_config().await;
    let setting = |name: &str| d.env.iter().find(|(k, _)| k == name).unwrap().1.clone();
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let inventory =
        filetrail_aws::inventory::DynamoInventoryStore::new(dynamo.clone(), setting("FILETRAIL_INVENTORY_TABLE"));
    let events = filetrail_aws::events::DynamoEventStore::new(dynamo, setting("FILETRAIL_EVENTS_TABLE"));
    let row: filetrail_core::model::InventoryRow = serde_json::from_value(serde_json::json!({
        "drive_id": "b!drive-1",
        "item_id": "01ITEM",
        "connection": "contoso",
        "name": "Q3 forecast.xlsx",
        "path": "/Reports/Q3 forecast.xlsx",
        "is_folder": false,
        "size": 2048,
        "ctag": "\"c:{Q3},4\"",
        "hash_unavailable": "not modified since initial indexing",
        "generation": 1,
        "indexed_at": chrono::Utc::now(),
    }))
    .unwrap();
    inventory.put_rows(&[row]).await.unwrap();
    let hashes = FileHashes {
        version: None,
        md5: "9e107d9d372bb6826bd81d3542a419d6".into(),
        sha256: "d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592".into(),
        ctag: "\"c:{Q3},4\"".into(),
        size: 2048,
        modified_at: None,
        hashed_at: chrono::Utc::now(),
    };
    inventory
        .set_file_hash("contoso", "b!drive-1", "01ITEM", &HashOutcome::Hashed(hashes.clone()))
        .await
        .unwrap();
    let modified = file_event("rec-modified", "modified", "FileModified", 30);
    let downloaded = file_event("rec-downloaded", "downloaded", "FileDownloaded", 5);
    events
        .insert_events(&[modified.clone(), downloaded.clone()])
        .await
        .unwrap();
    events
        .set_event_hash(
            &[modified.key(), downloaded.key()],
            &HashOutcome::Hashed(hashes.clone()),
        )
        .await
        .unwrap();

    let (ok, out, err) = d.run(&["file", "b!drive-1", "01ITEM"], "");
    assert!(ok, "{err}");
    assert!(
        out.starts_with("/Reports/Q3 forecast.xlsx  (drive b!drive-1, item 01ITEM)"),
        "{out}"
    );
    assert!(out.contains(&format!("MD5       {}", hashes.md5)), "{out}");
    assert!(out.contains(&format!("SHA-256   {}", hashes.sha256)), "{out}");
    assert!(out.contains("events    2 (newest first)"), "{out}");
    let (newest, older) = (out.find("downloaded").unwrap(), out.find("modified  ").unwrap());
    assert!(newest < older, "newest first: {out}");

    let (ok, out, _) = d.run(&["file", "b!drive-1", "01ITEM", "--json"], "");
    assert!(ok);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["inventory"]["hash"]["md5"], hashes.md5.as_str());
    assert_eq!(json["events"][0]["id"], "rec-downloaded");

    let (ok, _, err) = d.run(&["file", "b!drive-1", "01NOPE"], "");
    assert!(
        !ok && err.contains("no file with drive id \"b!drive-1\" and item id \"01NOPE\""),
        "{err}"
    );

    let (ok, out, err) = d.run(&["events", "contoso", "--limit", "1"], "");
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 2, "a header and one event: {out}");
    assert!(out.contains("megan@contoso.com") && out.contains(&hashes.md5), "{out}");
}

#[tokio::test]
async fn search_prints_matching_events_as_a_table_json_or_csv_with_pages_and_names_bad_values() {
    use filetrail_core::events::{FileHashes, HashOutcome};
    use filetrail_core::ports::EventStore as _;

    let d = Deployment::start("cmd-search").await;
    let sdk = d.moto.sdk_config().await;
    let setting = |name: &str| d.env.iter().find(|(k, _)| k == name).unwrap().1.clone();
    let state = d.state().await;
    let connection: filetrail_core::model::Connection = serde_json::from_value(serde_json::json!({
        "id": "contoso", "kind": "cloud", "tenant_id": TENANT, "client_id": "app-1",
        "secret_id": "filetrail/contoso", "cloud": "worldwide", "drive_cap": 10,
        "created_at": chrono::Utc::now() - chrono::Duration::days(1),
    }))
    .unwrap();
    state.put_connection(&connection).await.unwrap();
    let events = filetrail_aws::events::DynamoEventStore::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        setting("FILETRAIL_EVENTS_TABLE"),
    );
    let mut modified = file_event("rec-modified", "modified", "FileModified", 30);
    modified.hash = Some(HashOutcome::Hashed(FileHashes {
        version: None,
        md5: "9e107d9d372bb6826bd81d3542a419d6".into(),
        sha256: "d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592".into(),
        ctag: "\"c:{Q3},4\"".into(),
        size: 2048,
        modified_at: None,
        hashed_at: chrono::Utc::now(),
    }));
    let mut downloaded = file_event("rec-downloaded", "downloaded", "FileDownloaded", 5);
    // Whoever follows a link chooses their user agent: a spreadsheet must not run it.
    const AGENT: &str = "=HYPERLINK(\"https://evil.example\",\"open\")";
    downloaded.event.user_agent = Some(AGENT.into());
    let older = file_event("rec-older", "downloaded", "FileDownloaded", 60 * 24 * 3);
    events.insert_events(&[modified, downloaded, older]).await.unwrap();

    let (ok, out, err) = d.run(&["search", "--user", "Megan@Contoso.com", "--since", "2d"], "");
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().count(),
        3,
        "a header and two events, the 3-day-old one excluded: {out}"
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[1].contains("downloaded") && lines[2].contains("modified"),
        "newest first: {out}"
    );
    assert!(
        lines[1].contains("hash unavailable: not modified since initial indexing"),
        "a read of a file never modified since indexing: {out}"
    );
    assert!(lines[2].contains("9e107d9d372bb6826bd81d3542a419d6"), "{out}");

    let (ok, out, _) = d.run(
        &[
            "search",
            "--sha256",
            "D7A8FBB307D7809469CA9ABCB0082E4F8D5651E46D3CDB762D02D0BF37C9E592",
            "--json",
        ],
        "",
    );
    assert!(ok);
    let found: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["id"], "rec-modified");

    let (ok, out, _) = d.run(
        &["search", "--file-name", "q3*.xlsx", "--type", "downloaded", "--csv"],
        "",
    );
    assert!(ok);
    let mut csv = csv_reader(&out);
    let header = csv.headers().unwrap().clone();
    let rows: Vec<_> = csv.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2, "{out}");
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(&rows[0][col("record_id")], "rec-downloaded");
    assert_eq!(&rows[1][col("record_id")], "rec-older");
    assert_eq!(&rows[0][col("path")], "/Reports/Q3 forecast.xlsx");
    assert_eq!(
        &rows[0][col("user_agent")],
        format!("'{AGENT}"),
        "a cell a spreadsheet would run is written as text"
    );
    let (ok, out, _) = d.run(
        &["search", "--file-name", "q3*.xlsx", "--type", "downloaded", "--json"],
        "",
    );
    assert!(ok);
    assert!(
        out.lines()
            .any(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["user_agent"] == AGENT),
        "JSON keeps the value as recorded: {out}"
    );

    let (ok, first, err) = d.run(&["search", "--path", "/Reports", "--limit", "2", "--explain"], "");
    assert!(ok, "{err}");
    assert!(err.contains("Query by_path path_pk = contoso#reports"), "{err}");
    let token = err.split("--page-token ").nth(1).unwrap().trim().to_owned();
    let (ok, rest, err) = d.run(
        &["search", "--path", "/Reports", "--limit", "2", "--page-token", &token],
        "",
    );
    assert!(ok, "{err}");
    assert_eq!(first.lines().count() + rest.lines().count(), 2 + 3, "{first}{rest}");
    assert!(rest.contains("3") && !err.contains("--page-token"), "{rest} / {err}");

    // A reader that stops at once (`| head -0`) ends the command quietly, without a panic.
    let mut child = d.spawn(&["search", "--user", "megan@contoso.com", "--json"]);
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    for (args, needle) in [
        (&["search", "--md5", "abc"][..], "--md5 \"abc\""),
        (&["search", "--since", "last tuesday"][..], "--since \"last tuesday\""),
        (&["search", "--type", "teleported"][..], "\"teleported\""),
        (&["search", "--connection", "nope"][..], "no connection named \"nope\""),
        (&["search", "--page-token", "garbage"][..], "page token \"garbage\""),
    ] {
        let (ok, _, err) = d.run(args, "");
        assert!(!ok && err.contains(needle), "{args:?}: {err}");
    }
}

fn csv_reader(text: &str) -> csv::Reader<&[u8]> {
    csv::Reader::from_reader(text.as_bytes())
}

#[tokio::test]
async fn exposure_and_revoke_name_what_is_wrong_before_touching_anything() {
    let d = Deployment::start("cmd-exposure").await;
    let (ok, out, err) = d.run(&["exposure"], "");
    assert!(ok, "{err}");
    assert!(out.contains("No file is shared"), "{out}");
    let (ok, _, err) = d.run(&["exposure", "nope"], "");
    assert!(!ok && err.contains("no connection named \"nope\""), "{err}");

    let (ok, _, err) = d.run(&["sharing", "revoke", "b!drive-1", "01ITEM"], "");
    assert!(
        !ok && err.contains("--permission ID, --all-external or --all-anonymous"),
        "{err}"
    );
    let (ok, _, err) = d.run(
        &[
            "sharing",
            "revoke",
            "b!drive-1",
            "01ITEM",
            "--all-external",
            "--permission",
            "p1",
        ],
        "",
    );
    assert!(!ok && err.contains("--all-external or --all-anonymous"), "{err}");
    let (ok, _, err) = d.run(
        &["sharing", "revoke", "b!nowhere", "01ITEM", "--all-anonymous", "--yes"],
        "",
    );
    assert!(!ok && err.contains("no monitored drive \"b!nowhere\""), "{err}");
}

#[tokio::test]
async fn redrive_moves_a_queues_dead_letters_back_unchanged_and_names_a_bad_queue() {
    use aws_sdk_sqs::types::QueueAttributeName;
    let d = Deployment::start("cmd-redrive").await;
    let sqs = aws_sdk_sqs::Client::new(&d.moto.sdk_config().await);
    let setting = |name: &str| d.env.iter().find(|(k, _)| k == name).unwrap().1.clone();
    let queue = setting("FILETRAIL_ACTIVITY_QUEUE_URL");
    let policy = sqs
        .get_queue_attributes()
        .queue_url(&queue)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .unwrap();
    let policy: serde_json::Value =
        serde_json::from_str(&policy.attributes().unwrap()[&QueueAttributeName::RedrivePolicy]).unwrap();
    let dlq_name = policy["deadLetterTargetArn"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap();
    let dlq = sqs
        .get_queue_url()
        .queue_name(dlq_name)
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();
    // 23 blob messages that failed repeatedly wait on the dead-letter queue (three batches of
    // up to ten to move).
    let created = chrono::Utc::now() - chrono::Duration::days(2);
    let bodies: Vec<String> = (0..23)
        .map(|i| {
            serde_json::to_string(&filetrail_core::jobs::BlobJob {
                connection: "contoso".into(),
                blob: filetrail_core::activity::ContentBlob {
                    content_type: "Audit.SharePoint".into(),
                    content_id: format!("blob-{i:02}"),
                    content_uri: format!("https://manage.office.com/api/v1.0/t/activity/feed/audit/blob-{i:02}"),
                    content_created: created + chrono::Duration::minutes(i),
                    content_expiration: None,
                },
                parked: false,
            })
            .unwrap()
        })
        .collect();
    for body in &bodies {
        sqs.send_message()
            .queue_url(&dlq)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }

    // status says how old they are and when the first blob can no longer be fetched.
    let connection: filetrail_core::model::Connection = serde_json::from_value(serde_json::json!({
        "id": "contoso", "kind": "cloud", "tenant_id": TENANT, "client_id": "app-1",
        "secret_id": "filetrail/contoso", "cloud": "worldwide", "drive_cap": 10,
        "created_at": chrono::Utc::now() - chrono::Duration::days(3),
    }))
    .unwrap();
    d.state().await.put_connection(&connection).await.unwrap();
    let (ok, out, err) = d.run(&["status"], "");
    assert!(ok, "{err}");
    let expiry = (created + chrono::Duration::days(7))
        .format("%Y-%m-%d %H:%MZ")
        .to_string();
    assert!(
        out.contains("23 messages of ") && out.contains(&format!("expires at Microsoft {expiry}: redrive before")),
        "{out}"
    );
    assert!(out.contains("`filetrail redrive activity`"), "{out}");

    let (ok, out, err) = d.run(&["redrive", "activity"], "");
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("Moved 23 messages from {dlq_name} back to ")),
        "{out}"
    );
    let mut moved = Vec::new();
    loop {
        let got = sqs
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        if got.messages().is_empty() {
            break;
        }
        moved.extend(got.messages().iter().map(|m| m.body().unwrap().to_owned()));
    }
    moved.sort();
    assert_eq!(moved, bodies, "every dead letter is back on the queue, unchanged, once");
    let left = sqs
        .get_queue_attributes()
        .queue_url(&dlq)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap();
    assert_eq!(
        left.attributes().unwrap()[&QueueAttributeName::ApproximateNumberOfMessages],
        "0"
    );

    let (ok, out, _) = d.run(&["redrive", "hash"], "");
    assert!(ok && out.contains("Moved 0 messages"), "{out}");
    let (ok, _, err) = d.run(&["redrive", "hashes"], "");
    assert!(
        !ok && err.contains("no work queue \"hashes\": one of discover, index, activity, hash"),
        "{err}"
    );
}

/// No command panics on a closed pipe: `filetrail status | head` printed "failed printing to
/// stdout: Broken pipe" and exited 101 (as did `connection list` and `exposure`). Every listing
/// command, as text and as JSON, ends with exit 0 when its reader has gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listing_command_ends_quietly_when_its_reader_stops_at_once() {
    let d = Deployment::start("cmd-pipe").await;
    d.register_contoso();
    let commands: [&[&str]; 14] = [
        &["status"],
        &["status", "--json"],
        &["status", "contoso"],
        &["connection", "list"],
        &["connection", "list", "--json"],
        &["connection", "show", "contoso"],
        &["connection", "show", "contoso", "--json"],
        &["scope", "show", "contoso"],
        &["exposure"],
        &["exposure", "--json"],
        &["events", "contoso"],
        &["search", "--connection", "contoso", "--since", "2d"],
        &["search", "--connection", "contoso", "--since", "2d", "--csv"],
        &["inventory", "contoso"],
    ];
    for args in commands {
        let out = d.run_into_closed_pipe(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !err.contains("panicked"),
            "filetrail {} | head -0: {:?}\n{err}",
            args.join(" "),
            out.status
        );
    }
}
