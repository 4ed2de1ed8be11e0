//! `kilnctl image`: the image catalog.

use super::table::{Columns, Output, cell, print, print_list};
use crate::api::catalog::{Image, ImageSpec};
use crate::client::Client;
use anyhow::{Context, Result};
use clap::Subcommand;
use reqwest::Method;

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// List the images.
    List {
        /// all, official or custom.
        #[arg(long, default_value = "all")]
        filter: String,
    },
    /// Show an image.
    Get {
        /// Image name or id.
        image: String,
    },
    /// Add a custom image.
    Create(ImageArgs),
    /// Replace all fields of a custom image.
    Update {
        /// Image name or id.
        image: String,
        #[command(flatten)]
        args: ImageArgs,
    },
    /// Delete a custom image.
    Delete {
        /// Image name or id.
        image: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct ImageArgs {
    /// Name of the image.
    name: String,
    /// What the image is.
    #[arg(long)]
    description: Option<String>,
    /// OCI reference, e.g. ghcr.io/org/ubuntu:24.04.
    #[arg(long)]
    oci_url: Option<String>,
    /// Registry credential id.
    #[arg(long)]
    registry_credential: Option<String>,
    /// Raw disk image URL.
    #[arg(long)]
    raw_disk_url: Option<String>,
    /// Hex digest of the raw disk image.
    #[arg(long)]
    raw_checksum: Option<String>,
    /// md5, sha256 or sha512 (detected from the length when omitted).
    #[arg(long)]
    raw_checksum_type: Option<String>,
}

impl ImageArgs {
    fn spec(self) -> Result<ImageSpec> {
        let registry_credential_id = self
            .registry_credential
            .map(|id| {
                id.parse()
                    .with_context(|| format!("registry credential id {id:?} is not a UUID"))
            })
            .transpose()?;
        Ok(ImageSpec {
            name: self.name,
            description: self.description,
            oci_url: self.oci_url,
            registry_credential_id,
            raw_disk_url: self.raw_disk_url,
            raw_checksum: self.raw_checksum,
            raw_checksum_type: self.raw_checksum_type,
        })
    }
}

const IMAGE: Columns<Image> = &[
    ("NAME", |i| i.name.clone()),
    ("OFFICIAL", |i| cell(&i.official)),
    ("OCI URL", |i| cell(&i.oci_url)),
    ("RAW DISK", |i| cell(&i.raw_disk.as_ref().map(|r| &r.url))),
    ("ID", |i| i.id.to_string()),
];

impl Cmd {
    pub async fn run(self, c: &Client, o: Output) -> Result<()> {
        match self {
            Cmd::List { filter } => {
                let list: Vec<Image> = c.get_as(&format!("/api/images?filter={filter}")).await?;
                print_list(o, &list, IMAGE);
            }
            Cmd::Get { image } => {
                let v: Image = c.get_as(&format!("/api/images/{image}")).await?;
                print(o, &v, IMAGE);
            }
            Cmd::Create(args) => {
                let body = args.spec()?;
                let v: Image = c.call_as(Method::POST, "/api/images", Some(&body)).await?;
                print(o, &v, IMAGE);
            }
            Cmd::Update { image, args } => {
                let (path, body) = (format!("/api/images/{image}"), args.spec()?);
                let v: Image = c.call_as(Method::PUT, &path, Some(&body)).await?;
                print(o, &v, IMAGE);
            }
            Cmd::Delete { image } => c.delete(&format!("/api/images/{image}")).await?,
        }
        Ok(())
    }
}
