//! `kilnctl installer`: installer media with this server's URL and CA pin baked in.

use super::table::{Columns, Output, cell, print};
use crate::client::Client;
use anyhow::Result;
use clap::Subcommand;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Download the installer ISO (BIOS and UEFI, CD or USB stick).
    Iso {
        #[command(flatten)]
        bake: BakeArgs,
        /// Where to write the ISO.
        #[arg(long, default_value = "kiln.iso")]
        out: PathBuf,
    },
    /// Print the iPXE script that boots the installer kernel from this server.
    Ipxe {
        #[command(flatten)]
        bake: BakeArgs,
    },
}

#[derive(clap::Args, Debug)]
pub struct BakeArgs {
    /// Also bake a new bootstrap token of this lifetime (10m, 1d, 7d, 30d, 90d or 365d):
    /// machines booting it skip approval. Without it they show an approval code.
    #[arg(long)]
    token_ttl: Option<String>,
    /// Role the baked token assigns (repeatable; needs --token-ttl).
    #[arg(long = "role", requires = "token_ttl")]
    roles: Vec<String>,
}

impl BakeArgs {
    /// The query string (`?token_ttl=...&roles=a,b`, or empty).
    fn query(&self) -> String {
        let mut q = Vec::new();
        if let Some(t) = &self.token_ttl {
            q.push(format!("token_ttl={t}"));
        }
        if !self.roles.is_empty() {
            q.push(format!("roles={}", self.roles.join(",")));
        }
        if q.is_empty() {
            String::new()
        } else {
            format!("?{}", q.join("&"))
        }
    }
}

/// What `installer iso` wrote.
#[derive(Serialize)]
struct Downloaded {
    file: String,
    size_bytes: u64,
    token_ttl: Option<String>,
    roles: Vec<String>,
}

const DOWNLOADED: Columns<Downloaded> = &[
    ("FILE", |d| d.file.clone()),
    ("SIZE", |d| cell(&d.size_bytes)),
    ("TOKEN TTL", |d| cell(&d.token_ttl)),
];

impl Cmd {
    pub async fn run(self, c: &Client, o: Output) -> Result<()> {
        match self {
            Cmd::Iso { bake, out } => iso(c, o, bake, out).await,
            Cmd::Ipxe { bake } => {
                print!("{}", c.text(&format!("/boot.ipxe{}", bake.query())).await?);
                Ok(())
            }
        }
    }
}

async fn iso(c: &Client, o: Output, bake: BakeArgs, out: PathBuf) -> Result<()> {
    let path = format!("/api/installer/iso{}", bake.query());
    let size_bytes = c.download(&path, &out).await?;
    let d = Downloaded {
        file: out.display().to_string(),
        size_bytes,
        token_ttl: bake.token_ttl,
        roles: bake.roles,
    };
    print(o, &d, DOWNLOADED);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bake_query() {
        for (ttl, roles, want) in [
            (None, vec![], ""),
            (Some("1d"), vec![], "?token_ttl=1d"),
            (Some("7d"), vec!["web", "db"], "?token_ttl=7d&roles=web,db"),
        ] {
            let b = BakeArgs {
                token_ttl: ttl.map(String::from),
                roles: roles.into_iter().map(String::from).collect(),
            };
            assert_eq!(b.query(), want);
        }
    }
}
