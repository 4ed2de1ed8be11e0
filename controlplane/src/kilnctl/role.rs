//! `kilnctl role`: machine roles (image and cloud-init data).

use super::table::{Columns, Output, cell, print, print_list};
use crate::api::catalog::{Role, RoleSpec};
use crate::client::Client;
use anyhow::{Context, Result};
use clap::Subcommand;
use reqwest::Method;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// List the roles.
    List,
    /// Show a role with its cloud-init data.
    Get {
        /// Role name or id.
        role: String,
    },
    /// Create a role.
    Create(RoleArgs),
    /// Replace a role (all fields).
    Update {
        /// Role name or id.
        role: String,
        #[command(flatten)]
        args: RoleArgs,
    },
    /// Delete a role.
    Delete {
        /// Role name or id.
        role: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct RoleArgs {
    /// Name of the role.
    name: String,
    /// Image name or id.
    #[arg(long)]
    image: Option<String>,
    /// cloud-init user-data file (#cloud-config, script or multipart).
    #[arg(long)]
    user_data: Option<PathBuf>,
    /// cloud-init vendor-data file.
    #[arg(long)]
    vendor_data: Option<PathBuf>,
}

impl RoleArgs {
    fn spec(self) -> Result<RoleSpec> {
        let read = |p: Option<PathBuf>| -> Result<Option<String>> {
            p.map(|p| {
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
            })
            .transpose()
        };
        Ok(RoleSpec {
            name: self.name,
            image: self.image,
            user_data: read(self.user_data)?,
            vendor_data: read(self.vendor_data)?,
        })
    }
}

const ROLE: Columns<Role> = &[
    ("NAME", |r| r.name.clone()),
    ("IMAGE", |r| cell(&r.image_name)),
    ("ID", |r| r.id.to_string()),
];

const ROLE_DATA: Columns<Role> = &[
    ("NAME", |r| r.name.clone()),
    ("IMAGE", |r| cell(&r.image_name)),
    ("USER DATA", |r| cell(&r.user_data)),
    ("VENDOR DATA", |r| cell(&r.vendor_data)),
];

impl Cmd {
    pub async fn run(self, c: &Client, o: Output) -> Result<()> {
        match self {
            Cmd::List => {
                let list: Vec<Role> = c.get_as("/api/roles").await?;
                print_list(o, &list, ROLE);
            }
            Cmd::Get { role } => {
                let v: Role = c.get_as(&format!("/api/roles/{role}")).await?;
                print(o, &v, ROLE_DATA);
            }
            Cmd::Create(args) => {
                let body = args.spec()?;
                let v: Role = c.call_as(Method::POST, "/api/roles", Some(&body)).await?;
                print(o, &v, ROLE);
            }
            Cmd::Update { role, args } => {
                let (path, body) = (format!("/api/roles/{role}"), args.spec()?);
                let v: Role = c.call_as(Method::PUT, &path, Some(&body)).await?;
                print(o, &v, ROLE);
            }
            Cmd::Delete { role } => c.delete(&format!("/api/roles/{role}")).await?,
        }
        Ok(())
    }
}
