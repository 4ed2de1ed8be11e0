//! `kilnctl api-key`: API keys of your account.

use super::table::{Columns, Output, cell, print, print_list};
use crate::api::accounts::{ApiKeyInfo, CreateApiKey, CreatedApiKey};
use crate::client::Client;
use anyhow::{Context, Result};
use clap::Subcommand;
use reqwest::Method;

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// List the API keys (never the keys themselves).
    List,
    /// Create an API key; prints it once.
    Create {
        /// Name of the key.
        name: String,
        /// An admin key (may create accounts and rotate token keys; admins only).
        #[arg(long)]
        admin: bool,
        /// Account id of the new key (admins only; default: yours).
        #[arg(long)]
        account: Option<String>,
    },
    /// Revoke an API key.
    Revoke {
        /// Id of the key.
        id: String,
    },
}

const KEY: Columns<ApiKeyInfo> = &[
    ("NAME", |k| k.name.clone()),
    ("ADMIN", |k| cell(&k.is_admin)),
    ("REVOKED", |k| cell(&k.revoked)),
    ("ID", |k| k.id.to_string()),
];

const CREATED: Columns<CreatedApiKey> = &[
    ("NAME", |k| k.info.name.clone()),
    ("ID", |k| k.info.id.to_string()),
    ("KEY (shown once)", |k| k.key.clone()),
];

impl Cmd {
    pub async fn run(self, c: &Client, o: Output) -> Result<()> {
        match self {
            Cmd::List => {
                let list: Vec<ApiKeyInfo> = c.get_as("/api/api-keys").await?;
                print_list(o, &list, KEY);
            }
            Cmd::Create {
                name,
                admin,
                account,
            } => {
                let account_id = account
                    .map(|a| {
                        a.parse()
                            .with_context(|| format!("account id {a:?} is not a UUID"))
                    })
                    .transpose()?;
                let body = CreateApiKey {
                    name,
                    admin,
                    account_id,
                };
                let v: CreatedApiKey = c
                    .call_as(Method::POST, "/api/api-keys", Some(&body))
                    .await?;
                print(o, &v, CREATED);
            }
            Cmd::Revoke { id } => c.delete(&format!("/api/api-keys/{id}")).await?,
        }
        Ok(())
    }
}
