//! `kilnctl token-key`: the keys bootstrap tokens are encrypted with (admin).

use super::table::{Columns, Output, cell, maybe_time, print_list, time};
use crate::client::Client;
use crate::tokens::TokenKeyInfo;
use anyhow::Result;
use clap::Subcommand;
use reqwest::Method;

const KEYS: &str = "/api/admin/token-keys";

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// List the token keys.
    List,
    /// Make a new current key (older tokens stay valid until their key is retired).
    Rotate,
    /// Retire a key: tokens encrypted with it are refused.
    Retire {
        /// Key id (KID).
        kid: String,
    },
}

const KEY: Columns<TokenKeyInfo> = &[
    ("KID", |k| k.kid.clone()),
    ("CURRENT", |k| cell(&k.current)),
    ("CREATED", |k| time(&k.created_at)),
    ("RETIRED", |k| maybe_time(&k.retired_at)),
];

impl Cmd {
    pub async fn run(self, c: &Client, o: Output) -> Result<()> {
        let keys: Vec<TokenKeyInfo> = match self {
            Cmd::List => c.get_as(KEYS).await?,
            Cmd::Rotate => {
                let path = format!("{KEYS}/rotate");
                c.call_as(Method::POST, &path, None::<&()>).await?
            }
            Cmd::Retire { kid } => {
                c.delete(&format!("{KEYS}/{kid}")).await?;
                c.get_as(KEYS).await?
            }
        };
        print_list(o, &keys, KEY);
        Ok(())
    }
}
