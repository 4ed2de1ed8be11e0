//! `kilnctl info` and `kilnctl artifacts`: the server itself.

use super::table::{Columns, Output, cell, print, print_list};
use crate::api::Info;
use crate::api::artifacts::ArtifactInfo;
use crate::client::Client;
use anyhow::Result;

const INFO: Columns<Info> = &[
    ("URL", |i| i.public_url.clone()),
    ("VERSION", |i| i.version.clone()),
    ("CA SHA256", |i| i.ca_sha256.clone()),
];

const ARTIFACT: Columns<ArtifactInfo> = &[
    ("NAME", |a| a.name.clone()),
    ("AVAILABLE", |a| cell(&a.available)),
    ("SIZE", |a| cell(&a.size_bytes)),
    ("HINT", |a| cell(&a.build_hint)),
];

pub async fn info(c: &Client, o: Output) -> Result<()> {
    print(o, &c.get_as::<Info>("/api/info").await?, INFO);
    Ok(())
}

pub async fn artifacts(c: &Client, o: Output) -> Result<()> {
    let list: Vec<ArtifactInfo> = c.get_as("/artifacts").await?;
    print_list(o, &list, ARTIFACT);
    Ok(())
}
