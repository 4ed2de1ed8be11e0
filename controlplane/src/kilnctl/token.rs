//! `kilnctl token`: bootstrap tokens.

use super::table::{Columns, Output, cell, print, time};
use crate::api::accounts::{CreateToken, CreatedToken};
use crate::client::Client;
use crate::tokens::Lifetime;
use anyhow::{Result, bail};
use clap::Subcommand;
use reqwest::Method;

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create a bootstrap token.
    Create {
        /// 10m, 1d, 7d, 30d, 90d or 365d.
        #[arg(long, default_value = "10m")]
        lifetime: String,
        /// Role to assign to registering machines (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
    },
}

const CREATED: Columns<CreatedToken> = &[
    ("EXPIRES", |t| time(&t.expires_at)),
    ("ROLES", |t| cell(&t.roles)),
    ("TOKEN", |t| t.token.clone()),
];

impl Cmd {
    pub async fn run(self, c: &Client, o: Output) -> Result<()> {
        let Cmd::Create { lifetime, roles } = self;
        let Some(lifetime) = Lifetime::parse(&lifetime) else {
            let known: Vec<&str> = Lifetime::ALL.iter().map(|l| l.as_str()).collect();
            bail!(
                "unknown token lifetime {lifetime:?}: give one of {}",
                known.join(", ")
            );
        };
        let body = CreateToken { lifetime, roles };
        let v: CreatedToken = c
            .call_as(Method::POST, "/api/bootstrap-tokens", Some(&body))
            .await?;
        print(o, &v, CREATED);
        Ok(())
    }
}
