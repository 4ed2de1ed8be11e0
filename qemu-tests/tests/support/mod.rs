//! Helpers shared by the VM tests that provision: the small test image
//! (scripts/build-test-image) built once per process, pushed to a real registry with
//! kiln-oci's pusher; sparse disk files; host-side checks of a provisioned disk.

#![allow(dead_code)]

use anyhow::{Context, Result, ensure};
use kiln_oci::digest::Digest;
use kiln_oci::reference::Reference;
use kiln_qemu_tests::artifacts;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

// The registry harness of the root tests (a real docker-registry with config and storage in
// a temp dir, killed on drop).
pub use kiln_testsupport::registry;

pub const GIB: u64 = 1 << 30;
pub const MIB: u64 = 1 << 20;

/// out/test-image/oci, built (or found cached) once per test process.
pub fn test_image() -> Result<PathBuf> {
    static DIR: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        let run = || -> Result<PathBuf> {
            let kernel = artifacts::bare_kernel()?;
            let out = artifacts::out_dir().join("test-image");
            let status =
                std::process::Command::new(artifacts::workspace().join("scripts/build-test-image"))
                    .arg(&kernel)
                    .arg(&out)
                    .status()
                    .context("running scripts/build-test-image")?;
            ensure!(
                status.success(),
                "scripts/build-test-image failed: {status}"
            );
            Ok(out.join("oci"))
        };
        run().map_err(|e| format!("{e:#}"))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// Pushes tag `tag` of the OCI layout `dir` to `reference` with kiln-oci's pusher.
pub fn push_layout(dir: &Path, tag: &str, reference: &str, host: &str) -> Result<()> {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json"))?)?;
    let desc = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .with_context(|| format!("no tag {tag} in {}", dir.display()))?;
    let blob = |d: &str| -> Result<PathBuf> {
        let (alg, hex) = d.split_once(':').context("digest")?;
        Ok(dir.join("blobs").join(alg).join(hex))
    };
    let manifest_digest = desc["digest"].as_str().context("manifest digest")?;
    let manifest = std::fs::read(blob(manifest_digest)?)?;
    let m: serde_json::Value = serde_json::from_slice(&manifest)?;
    let r: Reference = reference.parse()?;
    let client = registry::client_for(&[host], None);
    let mut blobs = vec![m["config"]["digest"].as_str().context("config")?.to_owned()];
    for l in m["layers"].as_array().context("layers")? {
        blobs.push(l["digest"].as_str().context("layer digest")?.to_owned());
    }
    for d in blobs {
        let digest: Digest = d.parse()?;
        kiln_oci::push::push_blob(&client, &r, &blob(&d)?, &digest)
            .with_context(|| format!("pushing {d}"))?;
    }
    let media_type = m["mediaType"]
        .as_str()
        .unwrap_or("application/vnd.oci.image.manifest.v1+json");
    kiln_oci::push::push_manifest(&client, &r, &manifest, media_type)?;
    Ok(())
}

/// A real docker-registry on 127.0.0.1 (killed on drop) holding tag `tag` of the OCI
/// layout `layout` as `<registry>/<repo>`, pushed with kiln-oci's pusher.
pub fn registry_with(layout: &Path, tag: &str, repo: &str) -> Result<registry::Registry> {
    let reg = registry::Registry::start(registry::Auth::None);
    push_layout(layout, tag, &format!("{}/{repo}", reg.host()), &reg.host())?;
    Ok(reg)
}

/// [`registry_with`] the small test image as `kiln/test:latest`.
pub fn registry_with_test_image() -> Result<registry::Registry> {
    registry_with(&test_image()?, "test", "kiln/test:latest")
}

/// A sparse disk file; `pattern` marks its first and last MiB so changes show.
pub fn disk(dir: &Path, name: &str, size: u64, pattern: Option<u8>) -> Result<PathBuf> {
    let p = dir.join(name);
    let mut f = File::create(&p)?;
    f.set_len(size)?;
    if let Some(b) = pattern {
        let block = vec![b; MIB as usize];
        f.write_all(&block)?;
        f.seek(SeekFrom::Start(size - MIB))?;
        f.write_all(&block)?;
    }
    Ok(p)
}

pub fn read_at(f: &mut File, at: u64, len: usize) -> Result<Vec<u8>> {
    let mut b = vec![0u8; len];
    f.seek(SeekFrom::Start(at))?;
    f.read_exact(&mut b)?;
    Ok(b)
}

pub fn u32le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
pub fn u64le(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The first and last MiB of a disk the order must not touch, as they were made.
pub fn untouched(p: &Path, size: u64, pattern: Option<u8>) -> Result<()> {
    let mut f = File::open(p)?;
    let want = vec![pattern.unwrap_or(0); MIB as usize];
    for at in [0, size - MIB] {
        ensure!(
            read_at(&mut f, at, MIB as usize)? == want,
            "{} was written at byte {at}",
            p.display()
        );
    }
    ensure!(f.metadata()?.len() == size, "{} changed size", p.display());
    Ok(())
}

/// What the host sees on the provisioned disk (512-byte sectors).
pub fn check_provisioned(p: &Path, size: u64) -> Result<String> {
    let mut f = File::open(p)?;
    let last = size / 512 - 1;
    let primary = read_at(&mut f, 512, 512)?;
    ensure!(&primary[..8] == b"EFI PART", "no primary GPT header");
    ensure!(
        u64le(&primary, 32) == last,
        "primary header's backup LBA {} is not the last LBA {last}",
        u64le(&primary, 32)
    );
    let last_usable = u64le(&primary, 48);
    let backup = read_at(&mut f, last * 512, 512)?;
    ensure!(
        &backup[..8] == b"EFI PART",
        "no backup GPT header at the end"
    );
    ensure!(
        u64le(&backup, 24) == last,
        "backup header's own LBA is wrong"
    );
    // Entries: find the partition named "root" (the image's root-partition annotation).
    let entries_lba = u64le(&primary, 72);
    let count = u32le(&primary, 80) as usize;
    let esize = u32le(&primary, 84) as usize;
    let table = read_at(&mut f, entries_lba * 512, count * esize)?;
    let mut root = None;
    for e in table.chunks(esize) {
        if e[..16].iter().all(|&b| b == 0) {
            continue;
        }
        let name: Vec<u16> = e[56..128]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&c| c != 0)
            .collect();
        if String::from_utf16_lossy(&name) == "root" {
            root = Some((u64le(e, 32), u64le(e, 40)));
        }
    }
    let (first, end) = root.context("no partition named root")?;
    ensure!(
        end == last_usable,
        "root partition ends at LBA {end}, not at the last usable LBA {last_usable}"
    );
    // ext4 superblock at 1024 bytes into the partition.
    let sb = read_at(&mut f, first * 512 + 1024, 1024)?;
    ensure!(
        u16::from_le_bytes([sb[56], sb[57]]) == 0xEF53,
        "no ext4 superblock in the root partition"
    );
    let block = 1024u64 << u32le(&sb, 24);
    let blocks = u32le(&sb, 4) as u64 | (u32le(&sb, 0x150) as u64) << 32;
    let part_bytes = (end - first + 1) * 512;
    ensure!(
        blocks * block + block > part_bytes,
        "ext4 has {} bytes, the partition {part_bytes}: not grown",
        blocks * block
    );
    let label = String::from_utf8_lossy(&sb[120..136])
        .trim_end_matches('\0')
        .to_owned();
    ensure!(label == "kiln-root", "ext4 label {label:?}");
    let used_inodes = u32le(&sb, 0) - u32le(&sb, 16);
    ensure!(
        used_inodes > 50,
        "only {used_inodes} inodes in use: the rootfs layer is not there"
    );
    Ok(format!(
        "root partition LBA {first}..{end}, ext4 {} MiB, {used_inodes} inodes used",
        blocks * block / MIB
    ))
}
