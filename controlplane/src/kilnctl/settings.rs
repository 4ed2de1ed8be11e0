//! `kilnctl settings`: account settings (default image).

use super::table::{Columns, Output, cell, print};
use crate::api::catalog::{AccountSettings, PutSettings};
use crate::client::Client;
use anyhow::{Result, bail};
use clap::Subcommand;
use reqwest::Method;

const SETTINGS: &str = "/api/account/settings";

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Show the settings of your account.
    Get,
    /// Change the settings of your account.
    Set {
        /// Image name or id.
        #[arg(long, conflicts_with = "clear_default_image")]
        default_image: Option<String>,
        /// Remove the default image.
        #[arg(long)]
        clear_default_image: bool,
    },
}

const COLUMNS: Columns<AccountSettings> = &[
    ("ACCOUNT", |s| s.account_name.clone()),
    ("DEFAULT IMAGE", |s| cell(&s.default_image_name)),
];

impl Cmd {
    pub async fn run(self, c: &Client, o: Output) -> Result<()> {
        let v: AccountSettings = match self {
            Cmd::Get => c.get_as(SETTINGS).await?,
            Cmd::Set {
                default_image,
                clear_default_image,
            } => {
                if default_image.is_none() && !clear_default_image {
                    bail!("give --default-image NAME or --clear-default-image");
                }
                let body = PutSettings { default_image };
                c.call_as(Method::PUT, SETTINGS, Some(&body)).await?
            }
        };
        print(o, &v, COLUMNS);
        Ok(())
    }
}
