//! Pushing blobs and manifests to a registry (OCI distribution: HEAD to skip existing blobs,
//! POST to open an upload session, then either one streamed PUT with the digest (monolithic)
//! or, for blobs of [`CHUNKED_THRESHOLD`] and more, PATCH requests of [`CHUNK_SIZE`] bytes
//! with `Content-Range: start-end` and a final empty PUT with the digest (chunked). Blobs
//! stream from files, so memory stays bounded. A chunk that fails asks the registry where
//! the session stands (GET on the upload URL: `Range: 0-N`) and continues from there; a
//! session the registry dropped (distribution 2.8 cancels one whose size no longer matches
//! its state token, e.g. after a chunk was cut mid-body) is retried from a fresh session.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::digest::Digest;
use crate::reference::Reference;
use crate::registry::{Body, Client, Endpoint};

/// Upload sessions tried per blob.
const UPLOAD_TRIES: u32 = 3;

/// Blobs of this size and more are uploaded in chunks.
pub const CHUNKED_THRESHOLD: u64 = 64 << 20;

/// Chunk size of chunked uploads.
pub const CHUNK_SIZE: u64 = 32 << 20;

/// How a blob is uploaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadMode {
    /// Chunked when the blob is at least [`CHUNKED_THRESHOLD`] bytes, else monolithic.
    Auto,
    /// POST + one PUT carrying the whole blob.
    Monolithic,
    /// POST + PATCH chunks of this many bytes + an empty PUT with the digest.
    Chunked(u64),
}

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

/// Uploads the file at `path` as blob `digest` unless the registry has it already
/// ([`UploadMode::Auto`]).
pub fn push_blob(
    client: &Client,
    reference: &Reference,
    path: &Path,
    digest: &Digest,
) -> Result<()> {
    push_blob_with(client, reference, path, digest, UploadMode::Auto)
}

/// [`push_blob`] with an explicit upload mode.
pub fn push_blob_with(
    client: &Client,
    reference: &Reference,
    path: &Path,
    digest: &Digest,
    mode: UploadMode,
) -> Result<()> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    let chunk = match mode {
        UploadMode::Auto if size >= CHUNKED_THRESHOLD => Some(CHUNK_SIZE),
        UploadMode::Chunked(0) => bail!("chunk size 0 for blob {digest}"),
        UploadMode::Chunked(c) => Some(c),
        UploadMode::Auto | UploadMode::Monolithic => None,
    };
    if blob_exists(client, reference, digest)
        .with_context(|| format!("checking blob {digest} in {reference}"))?
    {
        return Ok(());
    }
    let ep = push_endpoint(client, reference);
    let mut last = None;
    for _ in 0..UPLOAD_TRIES {
        let result = match chunk {
            Some(c) => upload_chunked(client, reference, &ep, path, digest, size, c),
            None => upload(client, reference, &ep, path, digest),
        };
        match result {
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

/// Opens an upload session; returns its absolute URL.
fn start_upload(client: &Client, reference: &Reference, ep: &Endpoint) -> Result<String> {
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
    Ok(absolute(ep, location))
}

/// The upload URL with `digest=` added.
fn with_digest(location: &str, digest: &Digest) -> String {
    let mut put = location.to_owned();
    put.push(if put.contains('?') { '&' } else { '?' });
    put.push_str("digest=");
    put.push_str(digest.as_str());
    put
}

fn upload(
    client: &Client,
    reference: &Reference,
    ep: &Endpoint,
    path: &Path,
    digest: &Digest,
) -> Result<()> {
    let put = with_digest(&start_upload(client, reference, ep)?, digest);
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

/// The next offset from an upload response's `Range: 0-N` header (distribution writes `0-0`
/// for an empty session too, so `0-0` counts as nothing received: at worst one byte is sent
/// again and refused, and the session is retried).
pub fn next_offset(range: Option<&str>) -> Option<u64> {
    let r = range?.trim();
    let r = r.strip_prefix("bytes=").unwrap_or(r);
    let (start, end) = r.split_once('-')?;
    if start.trim() != "0" {
        return None;
    }
    match end.trim().parse::<u64>().ok()? {
        0 => Some(0),
        n => Some(n + 1),
    }
}

/// Chunks a chunk may fail in a row without the session moving forward.
const CHUNK_STALLS: u32 = 3;

fn upload_chunked(
    client: &Client,
    reference: &Reference,
    ep: &Endpoint,
    path: &Path,
    digest: &Digest,
    size: u64,
    chunk: u64,
) -> Result<()> {
    let scope = scope(reference);
    let mut location = start_upload(client, reference, ep)?;
    let mut offset = 0u64;
    let mut stalls = 0;
    while offset < size {
        let len = chunk.min(size - offset);
        let range = format!("{offset}-{}", offset + len - 1);
        let sent = client.send(
            ep,
            &scope,
            "PATCH",
            &location,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", &range),
            ],
            Body::FileRange(path, offset, len),
            &[],
        );
        let (resp, fallback) = match sent {
            Ok(resp) => (resp, offset + len),
            Err(e) => {
                // Where does the session stand? (A dropped session fails here: a new one.)
                let status = client
                    .send(ep, &scope, "GET", &location, &[], Body::Empty, &[])
                    .with_context(|| {
                        format!("chunk {range} of {digest} failed ({e:#}); upload status")
                    })?;
                (status, offset)
            }
        };
        let next = next_offset(resp.header("range")).unwrap_or(fallback);
        if let Some(l) = resp.header("location") {
            location = absolute(ep, l);
        }
        if next > size {
            bail!("upload of {digest}: the registry reports {next} bytes of {size}");
        }
        if next <= offset {
            stalls += 1;
            if stalls >= CHUNK_STALLS {
                bail!("upload of {digest}: stuck at byte {offset} of {size} after {stalls} tries");
            }
        } else {
            stalls = 0;
        }
        offset = next;
    }
    let resp = client.send(
        ep,
        &scope,
        "PUT",
        &with_digest(&location, digest),
        &[("Content-Length", "0")],
        Body::Empty,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_range_headers() {
        let cases: &[(Option<&str>, Option<u64>)] = &[
            (Some("0-1023"), Some(1024)),
            (Some("bytes=0-1023"), Some(1024)),
            (Some(" 0-0 "), Some(0)),
            (Some("0-1"), Some(2)),
            (Some("5-10"), None),
            (Some("0-"), None),
            (Some("garbage"), None),
            (None, None),
        ];
        for (h, want) in cases {
            assert_eq!(next_offset(*h), *want, "{h:?}");
        }
    }
}
