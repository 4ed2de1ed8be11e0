//! `kilnctl registry-credential`: registry credentials. Secrets are read from stdin, never
//! from arguments.

use super::table::{Columns, Output, cell, print, print_list};
use crate::api::catalog::{CreateRegistryCredential, RegistryCredential};
use crate::client::Client;
use anyhow::{Result, bail};
use clap::Subcommand;
use reqwest::Method;
use std::io::{BufRead, IsTerminal, Write};

const CREDENTIALS: &str = "/api/registry-credentials";

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// List the credentials (never their secrets).
    List,
    /// Store a credential; the password (or token) is read from stdin.
    Create {
        /// Registry host, e.g. ghcr.io.
        registry: String,
        /// Username; the password is read from stdin.
        #[arg(long, conflicts_with = "token")]
        username: Option<String>,
        /// Read a token (not a password) from stdin.
        #[arg(long)]
        token: bool,
    },
    /// Delete a credential.
    Delete {
        /// Id of the credential.
        id: String,
    },
}

const CREDENTIAL: Columns<RegistryCredential> = &[
    ("REGISTRY", |r| r.registry.clone()),
    ("KIND", |r| r.kind.clone()),
    ("USERNAME", |r| cell(&r.username)),
    ("ID", |r| r.id.to_string()),
];

impl Cmd {
    pub async fn run(self, c: &Client, o: Output) -> Result<()> {
        match self {
            Cmd::List => {
                let list: Vec<RegistryCredential> = c.get_as(CREDENTIALS).await?;
                print_list(o, &list, CREDENTIAL);
            }
            Cmd::Create {
                registry,
                username,
                token,
            } => {
                let body = new_credential(registry, username, token)?;
                let v: RegistryCredential =
                    c.call_as(Method::POST, CREDENTIALS, Some(&body)).await?;
                print(o, &v, CREDENTIAL);
            }
            Cmd::Delete { id } => c.delete(&format!("{CREDENTIALS}/{id}")).await?,
        }
        Ok(())
    }
}

/// The credential to store, its secret read from stdin.
fn new_credential(
    registry: String,
    username: Option<String>,
    token: bool,
) -> Result<CreateRegistryCredential> {
    let (password, token) = match (&username, token) {
        (Some(_), false) => (Some(read_secret("password")?), None),
        (None, true) => (None, Some(read_secret("token")?)),
        _ => bail!("give --username USER (password on stdin) or --token (token on stdin)"),
    };
    Ok(CreateRegistryCredential {
        registry,
        username,
        password,
        token,
    })
}

/// One line of stdin (prompted for when stdin is a terminal).
fn read_secret(what: &str) -> Result<String> {
    if std::io::stdin().is_terminal() {
        eprint!("{what}: ");
        std::io::stderr().flush()?;
    }
    let mut s = String::new();
    std::io::stdin().lock().read_line(&mut s)?;
    let s = s.trim_end_matches(['\n', '\r']).to_string();
    if s.is_empty() {
        bail!("empty {what} on stdin");
    }
    Ok(s)
}
