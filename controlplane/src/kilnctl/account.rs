//! `kilnctl account`: accounts (admin).

use super::table::{Columns, Output, print, print_list, time};
use crate::api::accounts::{Account, CreateAccount, CreatedAccount};
use crate::client::Client;
use anyhow::Result;
use clap::Subcommand;
use reqwest::Method;

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// List the accounts.
    List,
    /// Create an account; prints its first API key once.
    Create {
        /// Name of the account.
        name: String,
    },
}

const ACCOUNT: Columns<Account> = &[
    ("NAME", |a| a.name.clone()),
    ("ID", |a| a.id.to_string()),
    ("CREATED", |a| time(&a.created_at)),
];

const CREATED: Columns<CreatedAccount> = &[
    ("ACCOUNT", |a| a.account.name.clone()),
    ("ID", |a| a.account.id.to_string()),
    ("API KEY (shown once)", |a| a.api_key.clone()),
];

impl Cmd {
    pub async fn run(self, c: &Client, o: Output) -> Result<()> {
        match self {
            Cmd::List => {
                let list: Vec<Account> = c.get_as("/api/accounts").await?;
                print_list(o, &list, ACCOUNT);
            }
            Cmd::Create { name } => {
                let body = CreateAccount { name };
                let v: CreatedAccount = c
                    .call_as(Method::POST, "/api/accounts", Some(&body))
                    .await?;
                print(o, &v, CREATED);
            }
        }
        Ok(())
    }
}
