//! `filetrail connection add|list|show|deauthorize|resume|remove` as an admin runs them: the binary
//! against template.yaml provisioned on moto, registering m365-sim's tenant over real HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use filetrail_aws::moto::MotoServer;
use filetrail_aws::provision::provision;
use filetrail_aws::state::DynamoStateStore;
use filetrail_aws::template::Template;
use filetrail_core::model::ConnectionState;
use filetrail_core::ports::{ConnectionStore, EventStore as _, ScopeStore as _};
use m365_sim::{FilesPerDrive, SimConfig, SimHandle};

struct Deployment {
    moto: MotoServer,
    env: Vec<(String, String)>,
    sim: SimHandle,
}

/// `filetrail ARGS` with `stdin`: (exit code 0, stdout, stderr).
type Outcome = (bool, String, String);

impl Deployment {
    async fn start(stack: &str) -> Deployment {
        let moto = MotoServer::start().await.unwrap();
        let sdk = moto.sdk_config().await;
        let template = Template::from_path(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml")).unwrap();
        let provisioned = provision(&sdk, &template, stack).await.unwrap();
        let mut env: Vec<(String, String)> = provisioned.cli_env(&template).unwrap().into_iter().collect();
        for (k, v) in [
            ("AWS_ENDPOINT_URL", moto.endpoint()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ] {
            env.push((k.to_owned(), v));
        }
        let sim = m365_sim::spawn(SimConfig {
            users: 6,
            groups: 2,
            no_drive_ratio: 0.0,
            files_per_drive: FilesPerDrive::Fixed(2),
            ..SimConfig::default()
        })
        .await
        .unwrap();
        Deployment { moto, env, sim }
    }

    fn setting(&self, name: &str) -> String {
        self.env.iter().find(|(k, _)| k == name).unwrap().1.clone()
    }

    /// Runs the binary off the async threads (the simulator answers it meanwhile).
    async fn run(&self, args: &[&str], stdin: &str) -> Outcome {
        let mut child = Command::new(env!("CARGO_BIN_EXE_filetrail"))
            .args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }

    /// `connection add ID` for the simulator's tenant, with `extra` arguments and `secret` on stdin.
    async fn add(&self, id: &str, extra: &[&str], secret: &str) -> Outcome {
        let (login, graph) = (self.sim.login_url(), self.sim.graph_url());
        let mut args = vec![
            "connection",
            "add",
            id,
            "--tenant-id",
            self.sim.tenant_id(),
            "--client-id",
            self.sim.client_id(),
            "--login-url",
            &login,
            "--graph-url",
            &graph,
        ];
        args.extend_from_slice(extra);
        self.run(&args, &format!("{secret}\n")).await
    }

    async fn add_ok(&self, id: &str, extra: &[&str]) -> Outcome {
        let secret = self.sim.client_secret().to_owned();
        self.add(id, extra, &secret).await
    }

    async fn state(&self) -> DynamoStateStore {
        DynamoStateStore::new(
            aws_sdk_dynamodb::Client::new(&self.moto.sdk_config().await),
            self.setting("FILETRAIL_STATE_TABLE"),
        )
    }

    async fn events(&self) -> filetrail_aws::events::DynamoEventStore {
        filetrail_aws::events::DynamoEventStore::new(
            aws_sdk_dynamodb::Client::new(&self.moto.sdk_config().await),
            self.setting("FILETRAIL_EVENTS_TABLE"),
        )
    }

    /// Every key in the events table (a Scan: the test's ground truth, not a code path).
    async fn event_table_keys(&self) -> Vec<String> {
        let dynamo = aws_sdk_dynamodb::Client::new(&self.moto.sdk_config().await);
        let out = dynamo
            .scan()
            .table_name(self.setting("FILETRAIL_EVENTS_TABLE"))
            .send()
            .await
            .unwrap();
        let mut keys: Vec<String> = (out.items().iter())
            .filter_map(|i| i.get("event_key")?.as_s().ok().cloned())
            .collect();
        keys.sort();
        keys
    }

    async fn put_object(&self, key: &str, body: &str) {
        let s3 = aws_sdk_s3::Client::new(&self.moto.sdk_config().await);
        s3.put_object()
            .bucket(self.setting("FILETRAIL_BUCKET"))
            .key(key)
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
    }

    async fn object_keys(&self) -> Vec<String> {
        let s3 = aws_sdk_s3::Client::new(&self.moto.sdk_config().await);
        let out = s3
            .list_objects_v2()
            .bucket(self.setting("FILETRAIL_BUCKET"))
            .send()
            .await
            .unwrap();
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }

    /// The stored write-mode app of connection `contoso`.
    async fn write_app(&self) -> Option<filetrail_core::model::WriteApp> {
        self.state()
            .await
            .connection("contoso")
            .await
            .unwrap()
            .unwrap()
            .write_app
    }

    /// The client secret stored for connection `id`, as its functions read it.
    async fn stored_secret(&self, id: &str) -> String {
        let connection = self.state().await.connection(id).await.unwrap().unwrap();
        let sm = aws_sdk_secretsmanager::Client::new(&self.moto.sdk_config().await);
        let out = sm
            .get_secret_value()
            .secret_id(&connection.secret_id)
            .send()
            .await
            .unwrap();
        let doc: serde_json::Value = serde_json::from_str(out.secret_string().unwrap()).unwrap();
        doc["client_secret"].as_str().unwrap().to_owned()
    }

    async fn secret_names(&self) -> Vec<String> {
        let sm = aws_sdk_secretsmanager::Client::new(&self.moto.sdk_config().await);
        let out = sm.list_secrets().send().await.unwrap();
        out.secret_list()
            .iter()
            .filter_map(|s| s.name().map(str::to_owned))
            .collect()
    }
}

/// A quarantine document of `connection` holding `records` set-aside records.
fn quarantine_doc(connection: &str, records: usize) -> String {
    let record = serde_json::json!({
        "reason": {"kind": "unknown_operation", "operation": "FileSomethingNew"},
        "message": "unknown operation FileSomethingNew"});
    serde_json::json!({
        "connection": connection,
        "content_id": "blob-1",
        "written_at": chrono::Utc::now(),
        "records": vec![record; records]})
    .to_string()
}

/// A file event of `connection`, as ingest-activity stores it.
fn file_event(connection: &str, id: &str) -> filetrail_core::events::EventRecord {
    let at = chrono::Utc::now() - chrono::Duration::minutes(5);
    let event: filetrail_core::audit::FileEvent = serde_json::from_value(serde_json::json!({
        "id": id,
        "event_type": "modified",
        "low_signal": false,
        "operation": "FileModified",
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
        "inserted_at": at}))
    .unwrap();
    filetrail_core::events::EventRecord::onedrive(connection, event)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_checks_the_credentials_and_permissions_then_registers_once_per_kind() {
    let d = Deployment::start("conn-add").await;
    let secret = d.sim.client_secret().to_owned();
    let (ok, out, err) = d.add_ok("contoso", &["--trusted-domain", "contoso.com"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("Registered cloud connection \"contoso\""), "{out}");
    assert!(
        !out.contains(&secret) && !err.contains(&secret),
        "the secret is never printed"
    );
    let stats = d.sim.stats();
    assert!(
        stats.users >= 1 && stats.drive >= 1,
        "one directory and one files call: {stats:?}"
    );
    assert!(
        stats.activity.subscriptions_list >= 1,
        "the feed was checked: {:?}",
        stats.activity
    );

    let (ok, _, err) = d.add_ok("contoso-2", &[]).await;
    assert!(!ok);
    assert!(
        err.contains("already registered") && err.contains("\"contoso\""),
        "names the existing one: {err}"
    );
    assert_eq!(d.state().await.connections().await.unwrap().len(), 1);
}

/// The same tenant named by its domain is the same tenant: refused once per kind, as by its id.
/// (Accepted, its discovery changed the first connection's drives.) A first registration by
/// domain is stored by the directory id its token names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_named_by_its_domain_is_stored_by_its_id_and_registered_once_per_kind() {
    let d = Deployment::start("conn-domain").await;
    let (login, graph) = (d.sim.login_url(), d.sim.graph_url());
    let domain = d.sim.tenant_domain().to_owned();
    let by_domain = |id: &'static str, extra: &'static [&'static str]| {
        let mut args = vec![
            "connection".to_owned(),
            "add".to_owned(),
            id.to_owned(),
            "--tenant-id".to_owned(),
            domain.clone(),
            "--client-id".to_owned(),
            d.sim.client_id().to_owned(),
            "--login-url".to_owned(),
            login.clone(),
            "--graph-url".to_owned(),
            graph.clone(),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        args
    };
    let secret = format!("{}\n", d.sim.client_secret());
    let run = |args: Vec<String>| {
        let secret = secret.clone();
        let d = &d;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            d.run(&args, &secret).await
        }
    };

    let (ok, _, err) = run(by_domain("contoso", &[])).await;
    assert!(ok, "{err}");
    let stored = d.state().await.connection("contoso").await.unwrap().unwrap();
    assert_eq!(
        stored.tenant_id,
        d.sim.tenant_id().to_ascii_lowercase(),
        "stored by its directory id"
    );

    // Again by domain, and by id: the same tenant, refused.
    let (ok, _, err) = run(by_domain("contoso-2", &[])).await;
    assert!(
        !ok && err.contains("already registered") && err.contains("\"contoso\""),
        "{err}"
    );
    let (ok, _, err) = d.add_ok("contoso-3", &[]).await;
    assert!(!ok && err.contains("already registered"), "{err}");
    // Unchecked, a domain cannot be resolved: refused with what to give instead.
    let (ok, _, err) = run(by_domain("contoso-4", &["--skip-checks", "--kind", "email"])).await;
    assert!(
        !ok && err.contains("not a directory id") && err.contains(&domain),
        "{err}"
    );
    assert_eq!(d.state().await.connections().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_with_a_wrong_secret_gives_entras_error_with_its_fix_and_stores_nothing() {
    let d = Deployment::start("conn-badsecret").await;
    let (ok, _, err) = d.add("contoso", &[], "not-the-secret").await;
    assert!(!ok);
    assert!(err.contains("AADSTS7000215"), "{err}");
    assert!(
        err.contains("copy the secret's Value (not its Secret ID)"),
        "says how to fix it: {err}"
    );
    assert!(err.contains("Nothing was stored"), "{err}");
    assert!(!err.contains("not-the-secret"), "the secret is never printed");
    assert!(d.state().await.connections().await.unwrap().is_empty());
    assert!(d.secret_names().await.is_empty(), "no secret stored");
}

/// `set-secret` checks the new secret as `add` does: a refused one is not stored (it used to be
/// stored, with "Stored the new secret" and exit 0, leaving the connection broken), and the
/// connection goes on with the secret it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_secret_refused_by_entra_keeps_the_old_secret_and_a_working_one_is_stored() {
    let d = Deployment::start("conn-setsecret").await;
    assert!(d.add_ok("contoso", &[]).await.0);
    let good = d.sim.client_secret().to_owned();
    assert_eq!(d.stored_secret("contoso").await, good);

    let (ok, out, err) = d
        .run(&["connection", "set-secret", "contoso"], "not-the-secret\n")
        .await;
    assert!(!ok, "a refused secret fails the command: {out}");
    assert!(err.contains("AADSTS7000215"), "Entra's answer: {err}");
    assert!(err.contains("keeps its old secret"), "{err}");
    assert!(!err.contains("not-the-secret") && !out.contains("not-the-secret"));
    assert_eq!(d.stored_secret("contoso").await, good, "the old secret stays");

    // A secret Entra accepts but whose app lost a permission is refused too, naming it.
    d.sim.set_graph_roles(&["User.Read.All"]);
    let (ok, _, err) = d
        .run(&["connection", "set-secret", "contoso"], &format!("{good}\n"))
        .await;
    assert!(!ok && err.contains("Files.Read.All"), "{err}");
    d.sim.reset_roles();

    let (ok, out, err) = d
        .run(&["connection", "set-secret", "contoso"], &format!("{good}\n"))
        .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("Stored the new secret") && out.contains("started a discovery run"),
        "{out}"
    );
}

/// `connection app-manifest` prints what to register: the manifest's `requiredResourceAccess`
/// with the permission ids Microsoft publishes (Graph's permissions reference, the Office 365
/// Management APIs' app role), and the tenant's admin-consent URL. An app granted exactly what
/// it lists passes `connection add`'s checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_manifest_lists_what_add_checks_by_id_with_the_consent_url() {
    let d = Deployment::start("conn-manifest").await;
    let (tenant, client) = (d.sim.tenant_id().to_owned(), d.sim.client_id().to_owned());
    let manifest = |kind: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_filetrail"))
            .args(["connection", "app-manifest", "--kind", kind])
            .args(["--tenant-id", &tenant, "--client-id", &client])
            .env_clear()
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut ids = Vec::new();
        for api in json["requiredResourceAccess"].as_array().unwrap() {
            for access in api["resourceAccess"].as_array().unwrap() {
                assert_eq!(access["type"], "Role", "application permissions only");
                ids.push(format!(
                    "{}/{}",
                    api["resourceAppId"].as_str().unwrap(),
                    access["id"].as_str().unwrap()
                ));
            }
        }
        (ids, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    const GRAPH: &str = "00000003-0000-0000-c000-000000000000";
    let (cloud, err) = manifest("cloud");
    assert_eq!(
        cloud,
        [
            format!("{GRAPH}/7ab1d382-f21e-4acd-a863-ba3e13f7da61"),
            format!("{GRAPH}/01d4889c-1287-42c6-ac1f-5d1e02578ef6"),
            "c5393580-f805-4401-95e8-94b7a6ef2fc2/594c1fb6-4f81-4475-ae41-0c394909246c".to_owned(),
        ],
        "Directory.Read.All, Files.Read.All, ActivityFeed.Read"
    );
    assert!(
        err.contains(&format!(
            "https://login.microsoftonline.com/{tenant}/adminconsent?client_id={client}"
        )),
        "{err}"
    );
    let (email, _) = manifest("email");
    assert_eq!(
        email,
        [
            format!("{GRAPH}/7ab1d382-f21e-4acd-a863-ba3e13f7da61"),
            format!("{GRAPH}/810c84a8-4a9e-49e6-bf7d-12d183f40d01"),
        ],
        "Directory.Read.All, Mail.Read"
    );
    let (write, _) = manifest("write");
    assert_eq!(
        write,
        [format!("{GRAPH}/75359482-378d-4052-8f01-80520e7db3cd")],
        "Files.ReadWrite.All"
    );

    // Granted exactly the cloud list (by the names stderr gives), the app passes add's checks.
    d.sim.set_graph_roles(&["Directory.Read.All", "Files.Read.All"]);
    d.sim.set_manage_roles(&["ActivityFeed.Read"]);
    for name in ["Directory.Read.All", "Files.Read.All", "ActivityFeed.Read"] {
        assert!(err.contains(name), "{err}");
    }
    let (ok, out, err) = d.add_ok("contoso", &[]).await;
    assert!(ok, "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_names_each_missing_permission_with_how_to_grant_it_and_all_of_them_together() {
    let d = Deployment::start("conn-perms").await;
    let cases: [(&[&str], &[&str], &str); 3] = [
        (
            &["Files.Read.All", "Mail.Read"],
            &["ActivityFeed.Read"],
            "Directory.Read.All",
        ),
        (&["Directory.Read.All"], &["ActivityFeed.Read"], "Files.Read.All"),
        (&["Directory.Read.All", "Files.Read.All"], &[], "ActivityFeed.Read"),
    ];
    for (graph, manage, missing) in cases {
        d.sim.set_graph_roles(graph);
        d.sim.set_manage_roles(manage);
        let (ok, _, err) = d.add_ok("contoso", &[]).await;
        assert!(!ok, "{missing} missing must refuse");
        assert!(err.contains("lacks 1 application permission"), "{err}");
        assert!(
            err.contains(&format!(
                "Application permissions > {missing}, then Grant admin consent"
            )),
            "{err}"
        );
        assert!(err.contains("Nothing was stored"), "{err}");
    }
    d.sim.set_graph_roles(&[]);
    d.sim.set_manage_roles(&[]);
    let (ok, _, err) = d.add_ok("contoso", &[]).await;
    assert!(!ok);
    assert!(err.contains("lacks 2 application permissions"), "{err}");
    assert!(
        err.contains("Microsoft Graph > Application permissions > Directory.Read.All")
            && err.contains("Office 365 Management APIs > Application permissions > ActivityFeed.Read"),
        "{err}"
    );
    assert!(
        !err.contains("Files.Read.All (to"),
        "files are not checked without a user to look up: {err}"
    );
    assert!(d.state().await.connections().await.unwrap().is_empty());
    assert!(d.secret_names().await.is_empty());

    // Write mode is a second app: the pipeline's app is refused, a write app without
    // Files.ReadWrite.All is refused, one with it is stored where no function reads.
    d.sim.reset_roles();
    assert!(d.add_ok("contoso", &[]).await.0);
    let main_app = d.sim.client_id().to_owned();
    let args = ["connection", "write-mode", "contoso", "--client-id", main_app.as_str()];
    let (ok, _, err) = d.run(&args, &format!("{}\n", d.sim.client_secret())).await;
    assert!(!ok && err.contains("second app registration"), "{err}");
    d.sim
        .register_app("write-app-id", "write~Secret.1", &["Files.Read.All"]);
    let args = ["connection", "write-mode", "contoso", "--client-id", "write-app-id"];
    let (ok, _, err) = d.run(&args, "write~Secret.1\n").await;
    assert!(
        !ok && err.contains("Application permissions > Files.ReadWrite.All"),
        "{err}"
    );
    assert!(d.write_app().await.is_none());
    d.sim
        .register_app("write-app-id", "write~Secret.1", &["Files.ReadWrite.All"]);
    let (ok, out, err) = d.run(&args, "write~Secret.1\n").await;
    assert!(ok, "{err}");
    assert!(out.contains("Write mode of \"contoso\" is on"), "{out}");
    assert!(!err.contains("warning"), "the pipeline's app is read-only: {err}");
    let stored = d.state().await.connection("contoso").await.unwrap().unwrap();
    let app = stored.write_app.clone().unwrap();
    assert_eq!(app.client_id, "write-app-id");
    let write_prefix = d.setting("FILETRAIL_WRITE_SECRET_PREFIX");
    assert!(app.secret_id.starts_with(&write_prefix), "{}", app.secret_id);
    assert!(!app.secret_id.starts_with(&d.setting("FILETRAIL_SECRET_PREFIX")));
    assert_ne!(stored.secret_id, app.secret_id, "the pipeline keeps its own secret");
    assert_eq!(d.secret_names().await.len(), 2);

    // A pipeline app that can write is pointed out: write mode cannot keep its tokens read-only.
    let mut write = m365_sim::DEFAULT_GRAPH_ROLES.to_vec();
    write.push("Sites.FullControl.All");
    d.sim.set_graph_roles(&write);
    let (ok, _, err) = d.run(&args, "write~Secret.1\n").await;
    assert!(ok, "{err}");
    assert!(
        err.contains("warning") && err.contains("Sites.FullControl.All"),
        "{err}"
    );
    d.sim.reset_roles();

    // Off: the record says read-only again and the write secret is gone.
    let (ok, out, err) = d.run(&["connection", "write-mode", "contoso", "--off"], "").await;
    assert!(ok, "{err}");
    assert!(out.contains("is off"), "{out}");
    assert!(d.write_app().await.is_none());
    assert_eq!(d.secret_names().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_show_deauthorize_resume_and_remove_with_clear_errors() {
    let d = Deployment::start("conn-manage").await;
    assert!(d.add_ok("contoso", &["--trusted-domain", "contoso.com"]).await.0);
    let secret = d.sim.client_secret().to_owned();

    let (ok, out, err) = d.run(&["connection", "list"], "").await;
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("ID") && lines[0].contains("WRITE MODE"), "{out}");
    assert!(
        lines[1].contains("contoso") && lines[1].contains("active") && lines[1].ends_with("off"),
        "{out}"
    );
    let (ok, out, _) = d.run(&["connection", "list", "--json"], "").await;
    assert!(ok);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["id"], "contoso");
    assert_eq!(rows[0]["write_mode"], false);

    let (ok, out, err) = d.run(&["connection", "show", "contoso"], "").await;
    assert!(ok, "{err}");
    for expected in [
        "trusted domains  contoso.com",
        "secret",
        "drive cap",
        "last discovery   never",
        "scope",
    ] {
        assert!(out.contains(expected), "{expected:?} in {out}");
    }
    assert!(!out.contains(&secret), "show never prints the secret");
    let (_, json, _) = d.run(&["connection", "show", "contoso", "--json"], "").await;
    assert!(!json.contains(&secret));
    assert!(json.contains("\"secret_id\""), "{json}");

    let (ok, _, err) = d.run(&["connection", "show", "nope"], "").await;
    assert!(!ok && err.contains("no connection named \"nope\"") && err.contains("filetrail connection list"));

    let (ok, _, err) = d.run(&["connection", "resume", "contoso"], "").await;
    assert!(!ok && err.contains("is active"), "{err}");
    let (ok, out, err) = d.run(&["connection", "deauthorize", "contoso"], "").await;
    assert!(ok, "{err}");
    assert!(out.contains("history stays searchable"), "{out}");
    let stored = d.state().await.connection("contoso").await.unwrap().unwrap();
    assert_eq!(stored.state, ConnectionState::Deauthorized);
    let (ok, _, err) = d.run(&["connection", "deauthorize", "contoso"], "").await;
    assert!(!ok && err.contains("already deauthorized"), "{err}");
    let (_, out, _) = d.run(&["connection", "list"], "").await;
    assert!(out.contains("deauthorized"), "{out}");

    let (ok, out, err) = d.run(&["connection", "resume", "contoso"], "").await;
    assert!(ok, "{err}");
    assert!(out.contains("started a discovery run"), "{out}");
    let stored = d.state().await.connection("contoso").await.unwrap().unwrap();
    assert_eq!(stored.state, ConnectionState::Active);
    let sqs = aws_sdk_sqs::Client::new(&d.moto.sdk_config().await);
    let waiting = sqs
        .receive_message()
        .queue_url(d.setting("FILETRAIL_DISCOVER_QUEUE_URL"))
        .visibility_timeout(0)
        .send()
        .await
        .unwrap();
    let bodies: Vec<&str> = waiting.messages().iter().filter_map(|m| m.body()).collect();
    assert!(
        bodies.iter().any(|b| b.contains("contoso") && b.contains("resume")),
        "a discovery run was enqueued: {bodies:?}"
    );

    // remove keeps the history, searchable by the connection's name as it says; the secret goes.
    let events = d.events().await;
    events.insert_events(&[file_event("contoso", "rec-1")]).await.unwrap();
    let (ok, out, err) = d.run(&["connection", "remove", "contoso"], "").await;
    assert!(ok, "{err}");
    assert!(out.contains("stay") && out.contains("searchable"), "{out}");
    let stored = d.state().await.connection("contoso").await.unwrap().unwrap();
    assert_eq!(stored.state, ConnectionState::Removed);
    assert!(d.secret_names().await.is_empty(), "the secret is deleted");
    assert_eq!(events.file_events("b!drive-1", "01ITEM", 10).await.unwrap().len(), 1);
    let (ok, out, err) = d
        .run(
            &["search", "--connection", "contoso", "--since", "2020-01-01", "--json"],
            "",
        )
        .await;
    assert!(ok, "search by the removed connection's name: {err}");
    assert!(out.contains("rec-1"), "the removed connection's event is found: {out}");
    let (_, out, _) = d.run(&["connection", "list"], "").await;
    assert!(out.contains("removed"), "{out}");
    let (ok, out, err) = d.run(&["status", "contoso"], "").await;
    assert!(ok, "{err}");
    assert!(out.contains("history stays searchable until"), "{out}");
    for (args, expected) in [
        (&["connection", "remove", "contoso"][..], "was removed"),
        (&["connection", "resume", "contoso"][..], "was removed"),
        (&["connection", "deauthorize", "contoso"][..], "was removed"),
    ] {
        let (ok, _, err) = d.run(args, "").await;
        assert!(
            !ok && err.contains(expected) && err.contains("--purge"),
            "{args:?}: {err}"
        );
    }
    let (ok, _, err) = d.add_ok("contoso", &[]).await;
    assert!(
        !ok && err.contains("removed connection") && err.contains("--purge"),
        "{err}"
    );
    let (ok, _, err) = d.add_ok("contoso-again", &[]).await;
    assert!(
        !ok && err.contains("removed with its history kept") && err.contains("--purge"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_purge_asks_for_confirmation_and_deletes_events_and_state() {
    let d = Deployment::start("conn-purge").await;
    assert!(d.add_ok("contoso", &[]).await.0);
    let events = d.events().await;
    let mut renamed = file_event("contoso", "rec-2");
    renamed.event.event_type = filetrail_core::audit::FileEventType::Renamed;
    renamed.event.destination = Some(filetrail_core::audit::Destination {
        file_name: Some("Q4 forecast.xlsx".into()),
        path: Some("/Reports/Q4 forecast.xlsx".into()),
        relative_url: None,
        extension: None,
    });
    events
        .insert_events(&[file_event("contoso", "rec-1"), renamed, file_event("fabrikam", "rec-3")])
        .await
        .unwrap();
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let markers = |c: &str| [format!("~day#{c}#{today}"), format!("~ins#{c}#{today}")];
    let mut expected: Vec<String> = ["contoso#rec-1", "contoso#rec-2", "contoso#rec-2~to", "fabrikam#rec-3"]
        .map(String::from)
        .into();
    expected.extend(markers("contoso"));
    expected.extend(markers("fabrikam"));
    expected.sort();
    assert_eq!(
        d.event_table_keys().await,
        expected,
        "the rename has its destination entry, each connection's day its markers"
    );
    let others_export = "exports/events/dt=2026-11-30/hour=09/fabrikam-20261130T10-0000.json.gz";
    for key in [
        "scoping/contoso/users.csv",
        "exports/events/dt=2026-11-30/hour=09/contoso-20261130T10-0000.json.gz",
        others_export,
    ] {
        d.put_object(key, "x").await;
    }
    d.put_object("quarantine/contoso/blob-1.json", &quarantine_doc("contoso", 1))
        .await;

    let (ok, _, err) = d
        .run(&["connection", "remove", "contoso", "--purge"], "contoso\n")
        .await;
    assert!(!ok, "stdin is not a terminal: --yes is required");
    assert!(err.contains("--yes"), "{err}");
    assert!(
        d.state().await.connection("contoso").await.unwrap().is_some(),
        "nothing deleted"
    );
    assert_eq!(events.file_events("b!drive-1", "01ITEM", 10).await.unwrap().len(), 3);

    let (ok, out, err) = d
        .run(&["connection", "remove", "contoso", "--purge", "--yes"], "")
        .await;
    assert!(ok, "{err}");
    assert!(out.contains("2 events and 3 objects"), "{out}");
    assert_eq!(
        d.object_keys().await,
        [others_export],
        "another connection's export stays"
    );
    assert!(d.state().await.connection("contoso").await.unwrap().is_none());
    assert!(d.state().await.scope("contoso").await.unwrap().is_none());
    let mut left = vec!["fabrikam#rec-3".to_owned()];
    left.extend(markers("fabrikam"));
    left.sort();
    assert_eq!(
        d.event_table_keys().await,
        left,
        "contoso's events, the rename's destination entry and the day markers are gone, fabrikam's stay"
    );
    assert!(d.secret_names().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_the_connection_dashboard_with_queues_and_dead_letters() {
    let d = Deployment::start("conn-status").await;
    assert!(d.add_ok("contoso", &[]).await.0);
    d.put_object("quarantine/contoso/blob-1.json", &quarantine_doc("contoso", 2))
        .await;
    let (ok, out, err) = d.run(&["status"], "").await;
    assert!(ok, "{err}");
    for expected in [
        "contoso (cloud connection",
        "indexing          0/0 drives done, 0 items indexed",
        "write mode        off (read only)",
        "quarantined       2 records in 1 blob (s3 quarantine/contoso/)",
        "queues (all connections)",
        "hashing backlog   0 files waiting to be hashed",
        "export            not run yet (hourly; `filetrail export contoso --since 7d` writes a range now)",
    ] {
        assert!(out.contains(expected), "{expected:?} in\n{out}");
    }
    assert!(!out.contains("failed repeatedly"), "{out}");

    let (ok, out, _) = d.run(&["status", "--json"], "").await;
    assert!(ok);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let queues = json[0]["queues"].as_array().unwrap();
    assert_eq!(queues.len(), 4, "{queues:?}");
    assert!(
        queues
            .iter()
            .all(|q| q["dead_letters"] == 0 && q["dead_letter_queue"].is_string())
    );

    // A deauthorized connection says so, with the way back.
    assert!(d.run(&["connection", "deauthorize", "contoso"], "").await.0);
    let (_, out, _) = d.run(&["status", "contoso"], "").await;
    assert!(out.contains("`filetrail connection resume contoso`"), "{out}");
}

/// A guest acts as `dana_fabrikam.com#EXT#@…` and is the target of a share: an analyst searching
/// `--user dana@fabrikam.com` finds both (it found nothing when only UPNs were indexed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_by_a_guests_address_finds_what_they_did_and_what_was_shared_with_them() {
    let d = Deployment::start("guest-search").await;
    assert!(d.add_ok("contoso", &[]).await.0);
    let guest_upn = "dana_fabrikam.com#ext#@contoso.onmicrosoft.com";
    let mut download = file_event("contoso", "rec-guest-download");
    download.event.event_type = filetrail_core::audit::FileEventType::Downloaded;
    download.event.actor = serde_json::from_value(serde_json::json!({
        "id": "dana_fabrikam.com#EXT#@contoso.onmicrosoft.com", "upn": guest_upn,
        "email": "dana@fabrikam.com", "kind": "user", "external": true
    }))
    .unwrap();
    let mut share = file_event("contoso", "rec-share-with-dana");
    share.event.event_type = filetrail_core::audit::FileEventType::SharingSet;
    share.event.sharing = Some(
        serde_json::from_value(serde_json::json!({"external": true, "targets": [
            {"name": "Dana", "kind": "user", "email": "dana@fabrikam.com", "external": true}]}))
        .unwrap(),
    );
    let other = file_event("contoso", "rec-megan-edit");
    d.events().await.insert_events(&[download, share, other]).await.unwrap();

    for who in ["dana@fabrikam.com", "Dana_Fabrikam.com#EXT#@contoso.onmicrosoft.com"] {
        let (ok, out, err) = d
            .run(&["search", "--user", who, "--since", "2020-01-01", "--json"], "")
            .await;
        assert!(ok, "{err}");
        assert!(
            out.contains("rec-guest-download") && out.contains("rec-share-with-dana"),
            "{who}: {out}"
        );
        assert!(!out.contains("rec-megan-edit"), "{who}: {out}");
    }
}

/// Events dated long before the connection was made (records replayed late): a search with no
/// time filter finds them and says what it covered; a range from 2020 reads only the days that
/// hold events, and an export from 2020 says what it does and ends at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_and_exports_over_years_find_old_events_and_say_what_they_covered() {
    let d = Deployment::start("long-range").await;
    assert!(d.add_ok("contoso", &[]).await.0);
    let mut old = file_event("contoso", "rec-2020");
    old.event.observed_at = chrono::DateTime::parse_from_rfc3339("2020-03-04T05:06:07Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let recent = file_event("contoso", "rec-now");
    d.events().await.insert_events(&[old, recent]).await.unwrap();

    let (ok, out, err) = d.run(&["search", "--connection", "contoso", "--json"], "").await;
    assert!(ok, "{err}");
    assert!(out.contains("rec-2020") && out.contains("rec-now"), "{out}");
    assert!(err.contains("searched every recorded event"), "{err}");

    let (ok, out, err) = d
        .run(
            &[
                "search",
                "--connection",
                "contoso",
                "--since",
                "2020-01-01",
                "--explain",
                "--json",
            ],
            "",
        )
        .await;
    assert!(ok, "{err}");
    assert!(out.contains("rec-2020"), "{out}");
    let reads = err.lines().filter(|l| l.trim_start().starts_with("Query")).count();
    assert!(reads <= 1 + 2 * 8, "the marker partition and two days' shards: {err}");
    assert!(err.contains("searched events from 2020-01-01T00:00:00Z on"), "{err}");

    let (ok, out, err) = d
        .run(
            &[
                "search",
                "--connection",
                "contoso",
                "--since",
                "1d",
                "--type",
                "deleted",
            ],
            "",
        )
        .await;
    assert!(ok, "{err}");
    assert!(out.contains("No events match."), "{out}");
    assert!(
        err.contains("an earlier --since (or none) searches further back"),
        "{err}"
    );

    let (ok, out, err) = d
        .run(
            &["export", "contoso", "--since", "2020-02-01", "--include-open-hours"],
            "",
        )
        .await;
    assert!(ok, "{err}");
    assert!(
        err.contains(" of the days that recorded events of \"contoso\" between 2020-02-01T00:00:00"),
        "{err}"
    );
    assert!(out.contains("Exported 2 events"), "{out}");
}
