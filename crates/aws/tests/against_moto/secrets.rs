//! SecretsStore against moto.

use filetrail_aws::{AppSecret, Secret, SecretsStore};
use filetrail_core::PortError;

use crate::support::{aws, failure, unique};

#[tokio::test]
async fn app_secret_round_trips_and_a_new_value_replaces_the_old() -> anyhow::Result<()> {
    let aws = aws().await?;
    let store = SecretsStore::new(aws.secrets, format!("{}/", unique("filetrail")));
    let first = AppSecret {
        client_secret: Secret::new("first~Secret.Value"),
    };
    let second = AppSecret {
        client_secret: Secret::new("second~Secret.Value"),
    };

    let id = store.put_app_secret("contoso", &first).await?;
    assert!(id.ends_with("contoso/app"), "{id}");
    assert_eq!(store.get_app_secret(&id).await?, first);

    assert_eq!(store.put_app_secret("contoso", &second).await?, id);
    let fetched = store.get_app_secret(&id).await?;
    assert_eq!(fetched.client_secret.expose(), "second~Secret.Value");
    let shown = format!("{fetched:?}");
    assert!(
        !shown.contains("second~Secret.Value"),
        "Debug shows the secret: {shown}"
    );
    Ok(())
}

#[tokio::test]
async fn a_missing_secret_is_terminal_and_named() -> anyhow::Result<()> {
    let aws = aws().await?;
    let store = SecretsStore::new(aws.secrets, "filetrail/");
    let id = format!("filetrail/{}/app", unique("ghost"));

    let err = PortError::from(failure(store.get_app_secret(&id).await, "secret does not exist")?);

    assert!(err.is_terminal(), "{err}");
    assert!(err.to_string().contains(&id), "{err}");
    Ok(())
}

#[tokio::test]
async fn a_secret_that_is_not_a_client_secret_document_fails_without_showing_its_value() -> anyhow::Result<()> {
    let aws = aws().await?;
    let name = format!("filetrail/{}/app", unique("raw"));
    aws.secrets
        .create_secret()
        .name(&name)
        .secret_string("plain-text-Value123")
        .send()
        .await?;
    let store = SecretsStore::new(aws.secrets, "filetrail/");

    let err = failure(store.get_app_secret(&name).await, "not JSON")?;

    let text = err.to_string();
    assert!(text.contains(&name) && !text.contains("plain-text-Value123"), "{text}");
    Ok(())
}

#[tokio::test]
async fn a_customer_key_encrypts_new_secrets_and_a_rotation_keeps_the_connection_s_secret() -> anyhow::Result<()> {
    let aws = aws().await?;
    let key = "arn:aws:kms:us-east-1:123456789012:key/0b7e1c9a-5d1f-4c43-9a57-3c1a2f0d9e11";
    let old_prefix = format!("{}/", unique("filetrail"));
    let store = SecretsStore::new(aws.secrets.clone(), old_prefix.clone()).with_kms_key(Some(key.to_owned()));
    let id = store
        .put_app_secret(
            "contoso",
            &AppSecret {
                client_secret: Secret::new("first~Value"),
            },
        )
        .await?;
    let described = aws.secrets.describe_secret().secret_id(&id).send().await?;
    assert_eq!(
        described.kms_key_id(),
        Some(key),
        "the secret is under the customer key"
    );

    // A store of another prefix (a later template) rotates the secret the connection reads.
    let later = SecretsStore::new(aws.secrets.clone(), format!("{}/", unique("filetrail")));
    later
        .rotate_app_secret(
            &id,
            &AppSecret {
                client_secret: Secret::new("second~Value"),
            },
        )
        .await?;
    assert_eq!(later.get_app_secret(&id).await?.client_secret.expose(), "second~Value");
    let ghost = format!("{old_prefix}ghost/app");
    let err = failure(
        later
            .rotate_app_secret(
                &ghost,
                &AppSecret {
                    client_secret: Secret::new("x~Value"),
                },
            )
            .await,
        "rotating a secret that does not exist",
    )?;
    assert!(err.to_string().contains(&ghost), "{err}");
    Ok(())
}
