//! Pushing blobs and manifests to a registry (OCI distribution: HEAD to skip existing blobs,
//! POST to open an upload session, one streamed PUT with the digest). Blobs stream from files,
//! so memory stays bounded; a failed upload is retried from a fresh session.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::digest::Digest;
use crate::reference::Reference;
use crate::registry::{Body, Client, Endpoint};

/// Upload sessions tried per blob.
const UPLOAD_TRIES: u32 = 3;

fn push_endpoint(client: &Client, reference: &Reference) -> Endpoint {
    // Mirrors are for pulling; pushes go to the registry itself.
    client
        .endpoints(reference)
        .pop()
        .expect("the registry itself is always an endpoint")
}

fn scope(reference: &Reference) -> String {
    format!("repository:{}:pull,push", reference.repository())
}

/// True when the repository already has the blob.
pub fn blob_exists(client: &Client, reference: &Reference, digest: &Digest) -> Result<bool> {
    let ep = push_endpoint(client, reference);
    let url = ep.url(&format!("/v2/{}/blobs/{digest}", reference.repository()));
    let resp = client.send(
        &ep,
        &scope(reference),
        "HEAD",
        &url,
        &[],
        Body::Empty,
        &[404],
    )?;
    Ok(resp.status() == 200)
}

/// Uploads the file at `path` as blob `digest` unless the registry has it already.
pub fn push_blob(
    client: &Client,
    reference: &Reference,
    path: &Path,
    digest: &Digest,
) -> Result<()> {
    if blob_exists(client, reference, digest)
        .with_context(|| format!("checking blob {digest} in {reference}"))?
    {
        return Ok(());
    }
    let ep = push_endpoint(client, reference);
    let mut last = None;
    for _ in 0..UPLOAD_TRIES {
        match upload(client, reference, &ep, path, digest) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("at least one try"))
        .with_context(|| format!("pushing {} as {digest} to {reference}", path.display()))
}

fn absolute(ep: &Endpoint, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_owned()
    } else {
        format!("{}://{}{}", ep.scheme, ep.host, location)
    }
}

fn upload(
    client: &Client,
    reference: &Reference,
    ep: &Endpoint,
    path: &Path,
    digest: &Digest,
) -> Result<()> {
    let url = ep.url(&format!("/v2/{}/blobs/uploads/", reference.repository()));
    let resp = client.send(
        ep,
        &scope(reference),
        "POST",
        &url,
        &[("Content-Length", "0")],
        Body::Empty,
        &[],
    )?;
    let location = resp
        .header("location")
        .context("the registry opened an upload session without a Location header")?;
    let mut put = absolute(ep, location);
    put.push(if put.contains('?') { '&' } else { '?' });
    put.push_str("digest=");
    put.push_str(digest.as_str());
    let resp = client.send(
        ep,
        &scope(reference),
        "PUT",
        &put,
        &[("Content-Type", "application/octet-stream")],
        Body::File(path),
        &[],
    )?;
    if resp.status() != 201 {
        bail!(
            "upload of {digest}: expected HTTP 201, got {}",
            resp.status()
        );
    }
    Ok(())
}

/// Uploads a manifest under the reference's tag (or digest); returns its digest.
pub fn push_manifest(
    client: &Client,
    reference: &Reference,
    bytes: &[u8],
    media_type: &str,
) -> Result<Digest> {
    let ep = push_endpoint(client, reference);
    let digest = Digest::of(bytes);
    let url = ep.url(&format!(
        "/v2/{}/manifests/{}",
        reference.repository(),
        reference.manifest_ref()
    ));
    client
        .send(
            &ep,
            &scope(reference),
            "PUT",
            &url,
            &[("Content-Type", media_type)],
            Body::Bytes(bytes),
            &[],
        )
        .with_context(|| format!("pushing manifest {digest} to {reference}"))?;
    Ok(digest)
}
