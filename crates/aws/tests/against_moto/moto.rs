//! MotoServer itself (its own servers: reset would wipe the shared one).

use filetrail_aws::MotoServer;

#[tokio::test]
async fn reset_deletes_every_resource() -> anyhow::Result<()> {
    let moto = MotoServer::start().await?;
    let dynamo = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    crate::support::create_inventory_table(&dynamo).await?;
    assert_eq!(dynamo.list_tables().send().await?.table_names().len(), 1);

    moto.reset().await?;

    assert!(dynamo.list_tables().send().await?.table_names().is_empty());
    Ok(())
}

#[tokio::test]
async fn dropping_the_server_stops_it() -> anyhow::Result<()> {
    let moto = MotoServer::start().await?;
    let addr = moto.endpoint().trim_start_matches("http://").to_owned();
    assert!(
        tokio::net::TcpStream::connect(&addr).await.is_ok(),
        "moto answers while running"
    );

    drop(moto);

    // Drop waits for moto to exit, up to its stop timeout; on a loaded machine the wrapper's
    // watcher may still be on its way to SIGKILL then, so allow it a few more seconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while tokio::net::TcpStream::connect(&addr).await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "moto still listens on {addr}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(())
}
