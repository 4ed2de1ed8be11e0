//! Building a Kiln provisioning image (format v1) from a raw disk and an optional rootfs:
//! layer 0 from the disk (zstd-compressed unless it already is compressed), layer 1 from a
//! rootfs directory or tarball, an OCI config and manifest carrying the Kiln settings as
//! annotations. The result is a set of blob files in a work directory, which is then written
//! as an OCI layout or pushed.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::compression::{Compression, Decompressor};
use crate::digest::{Digest, HashingReader, HashingWriter};
use crate::format::{self, Layer0Form, MEDIA_TYPE_DISK};
use crate::reference::Reference;
use crate::registry::Client;

/// Compression of the rootfs layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerCompression {
    /// `tar+gzip` (what every tool reads).
    Gzip,
    /// `tar+zstd`.
    Zstd,
}

/// What to build.
#[derive(Clone, Debug)]
pub struct BuildSpec {
    /// Raw disk image, optionally already compressed (zstd, gzip, xz: detected from bytes).
    pub disk: PathBuf,
    /// Form of layer 0.
    pub layer0_form: Layer0Form,
    /// Rootfs directory or tarball (any compression) for layer 1.
    pub rootfs: Option<PathBuf>,
    /// Kiln settings and other manifest annotations (`dev.kiln.*` keys are validated).
    pub annotations: Vec<(String, String)>,
    /// Rootfs layer compression.
    pub layer_compression: LayerCompression,
    /// zstd level for the disk.
    pub zstd_level: i32,
    /// Where blob files are written.
    pub work_dir: PathBuf,
}

/// A blob file of a built image.
#[derive(Clone, Debug)]
pub struct BlobFile {
    /// Path in the work directory.
    pub path: PathBuf,
    /// Digest.
    pub digest: Digest,
    /// Size.
    pub size: u64,
    /// Media type.
    pub media_type: String,
}

/// A built image.
#[derive(Debug)]
pub struct BuiltImage {
    /// Layers in order.
    pub layers: Vec<BlobFile>,
    /// Config blob.
    pub config: BlobFile,
    /// Manifest JSON.
    pub manifest: Vec<u8>,
}

/// OCI manifest media type.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

struct Written {
    diff_id: Digest,
    digest: Digest,
    size: u64,
}

/// Copies `input` into `out`, compressed, hashing both sides.
fn compress_to(input: impl Read, out: &Path, c: Compression, zstd_level: i32) -> Result<Written> {
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: Default::default(),
    };
    let mut r = HashingReader {
        inner: input,
        hasher: Default::default(),
    };
    let ctx = || format!("writing {}", out.display());
    match c {
        Compression::Zstd => {
            let mut enc = zstd::Encoder::new(&mut w, zstd_level)?;
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
            enc.multithread(threads).context("zstd threads")?;
            enc.include_checksum(true)?;
            io::copy(&mut r, &mut enc).with_context(ctx)?;
            enc.finish().with_context(ctx)?;
        }
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(&mut w, flate2::Compression::new(6));
            io::copy(&mut r, &mut enc).with_context(ctx)?;
            enc.finish().with_context(ctx)?;
        }
        Compression::None => {
            io::copy(&mut r, &mut w).with_context(ctx)?;
        }
        Compression::Xz => bail!("the builder does not write xz"),
    }
    w.flush().with_context(ctx)?;
    Ok(Written {
        diff_id: r.hasher.digest(),
        digest: w.hasher.digest(),
        size: w.hasher.len(),
    })
}

fn sniff_file(path: &Path) -> Result<Compression> {
    let mut prefix = [0u8; crate::compression::SNIFF_LEN];
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let n = f
        .read(&mut prefix)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(Compression::sniff(&prefix[..n]))
}

/// Layer 0 as a compressed disk blob; returns the blob, its diff id.
fn disk_blob(spec: &BuildSpec) -> Result<(BlobFile, Digest)> {
    let compression = sniff_file(&spec.disk)?;
    let open =
        || File::open(&spec.disk).with_context(|| format!("opening disk {}", spec.disk.display()));
    let (path, w, compression) = if compression == Compression::None {
        let out = spec.work_dir.join("disk.raw.zst");
        let w = compress_to(open()?, &out, Compression::Zstd, spec.zstd_level)
            .with_context(|| format!("compressing disk {}", spec.disk.display()))?;
        (out, w, Compression::Zstd)
    } else {
        // Already compressed: ship as is; diff id = digest of the decompressed disk.
        let mut blob = HashingReader {
            inner: open()?,
            hasher: Default::default(),
        };
        let mut raw = HashingWriter {
            inner: io::sink(),
            hasher: Default::default(),
        };
        io::copy(&mut Decompressor::new(&mut blob)?, &mut raw)
            .with_context(|| format!("reading compressed disk {}", spec.disk.display()))?;
        let w = Written {
            diff_id: raw.hasher.digest(),
            digest: blob.hasher.digest(),
            size: blob.hasher.len(),
        };
        (spec.disk.clone(), w, compression)
    };
    let media_type = format!("{MEDIA_TYPE_DISK}+{compression}");
    Ok((
        BlobFile {
            path,
            digest: w.digest,
            size: w.size,
            media_type,
        },
        w.diff_id,
    ))
}

/// Layer 0 as an uncompressed tar holding the one compressed disk file.
fn disk_tar_blob(spec: &BuildSpec) -> Result<(BlobFile, Digest)> {
    let (disk, _) = disk_blob(spec)?;
    let name = match sniff_file(&disk.path)? {
        Compression::Zstd => "disk.raw.zst",
        Compression::Gzip => "disk.raw.gz",
        Compression::Xz => "disk.raw.xz",
        Compression::None => "disk.raw",
    };
    let out = spec.work_dir.join("layer0.tar");
    let file = File::create(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: Default::default(),
    };
    {
        let mut b = tar::Builder::new(&mut w);
        let mut h = tar::Header::new_gnu();
        h.set_size(disk.size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, File::open(&disk.path)?)
            .context("writing layer-0 tar")?;
        b.finish().context("writing layer-0 tar")?;
    }
    w.flush()?;
    let digest = w.hasher.digest();
    let blob = BlobFile {
        path: out,
        digest: digest.clone(),
        size: w.hasher.len(),
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
    };
    Ok((blob, digest))
}

/// Appends every entry under `root` (depth first, sorted, not following symlinks) to a tar.
fn tar_dir(root: &Path, out: impl Write) -> Result<()> {
    fn walk<W: Write>(b: &mut tar::Builder<W>, root: &Path, rel: &Path) -> Result<()> {
        let dir = root.join(rel);
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        for name in names {
            let rel = rel.join(&name);
            let full = root.join(&rel);
            b.append_path_with_name(&full, &rel)
                .with_context(|| format!("adding {} to the rootfs layer", full.display()))?;
            if std::fs::symlink_metadata(&full)?.is_dir() {
                walk(b, root, &rel)?;
            }
        }
        Ok(())
    }
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    walk(&mut b, root, Path::new(""))?;
    b.finish()?;
    Ok(())
}

fn rootfs_blob(spec: &BuildSpec, rootfs: &Path) -> Result<(BlobFile, Digest)> {
    let (c, ext, media_type) = match spec.layer_compression {
        LayerCompression::Gzip => (
            Compression::Gzip,
            "tar.gz",
            "application/vnd.oci.image.layer.v1.tar+gzip",
        ),
        LayerCompression::Zstd => (
            Compression::Zstd,
            "tar.zst",
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
    };
    let out = spec.work_dir.join(format!("rootfs.{ext}"));
    let w = (|| -> Result<Written> {
        if rootfs.is_dir() {
            // Tar on a thread, compress here: the pipe is the only buffer.
            let (reader, writer) = io::pipe().context("pipe")?;
            let root = rootfs.to_owned();
            let t = std::thread::spawn(move || tar_dir(&root, writer));
            let w = compress_to(reader, &out, c, 9);
            t.join()
                .map_err(|_| anyhow::anyhow!("tar thread panicked"))??;
            w
        } else {
            let f = File::open(rootfs)
                .with_context(|| format!("opening rootfs tarball {}", rootfs.display()))?;
            compress_to(Decompressor::new(f)?, &out, c, 9)
        }
    })()
    .with_context(|| format!("packing rootfs {}", rootfs.display()))?;
    Ok((
        BlobFile {
            path: out,
            digest: w.digest,
            size: w.size,
            media_type: media_type.into(),
        },
        w.diff_id,
    ))
}

/// Builds the image's blobs and manifest into `spec.work_dir`.
pub fn build(spec: &BuildSpec) -> Result<BuiltImage> {
    std::fs::create_dir_all(&spec.work_dir)
        .with_context(|| format!("creating {}", spec.work_dir.display()))?;
    let annotations: std::collections::HashMap<String, String> =
        spec.annotations.iter().cloned().collect();
    format::ImageSettings::from_sources(&[Some(&annotations)]).context("image settings")?;
    let mut annotations = annotations;
    annotations.insert(
        format::keys::FORMAT_VERSION.into(),
        format::FORMAT_VERSION.into(),
    );

    let (layer0, diff0) = match spec.layer0_form {
        Layer0Form::RawDisk => disk_blob(spec)?,
        Layer0Form::TarWithOneFile => disk_tar_blob(spec)?,
    };
    let mut layers = vec![layer0];
    let mut diff_ids = vec![diff0];
    if let Some(rootfs) = &spec.rootfs {
        let (l, d) = rootfs_blob(spec, rootfs)?;
        layers.push(l);
        diff_ids.push(d);
    }
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": annotations},
        "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(Digest::as_str).collect::<Vec<_>>()},
        "history": layers.iter().map(|l| json!({"created_by": format!("kiln-image: {}", l.media_type)})).collect::<Vec<_>>(),
    });
    let config_bytes = serde_json::to_vec(&config)?;
    let config_path = spec.work_dir.join("config.json");
    std::fs::write(&config_path, &config_bytes)?;
    let config = BlobFile {
        path: config_path,
        digest: Digest::of(&config_bytes),
        size: config_bytes.len() as u64,
        media_type: "application/vnd.oci.image.config.v1+json".into(),
    };
    let desc = |b: &BlobFile| json!({"mediaType": b.media_type, "digest": b.digest.as_str(), "size": b.size});
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": desc(&config),
        "layers": layers.iter().map(desc).collect::<Vec<_>>(),
        "annotations": annotations,
    });
    Ok(BuiltImage {
        layers,
        config,
        manifest: serde_json::to_vec_pretty(&manifest)?,
    })
}

impl BuiltImage {
    /// Pushes the image to `reference` (its tag); returns the manifest digest.
    pub fn push(&self, client: &Client, reference: &Reference) -> Result<Digest> {
        for b in self.layers.iter().chain([&self.config]) {
            crate::push::push_blob(client, reference, &b.path, &b.digest)?;
        }
        crate::push::push_manifest(client, reference, &self.manifest, MANIFEST_MEDIA_TYPE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(work: &Path, disk: &Path, form: Layer0Form, rootfs: Option<PathBuf>) -> BuildSpec {
        BuildSpec {
            disk: disk.to_owned(),
            layer0_form: form,
            rootfs,
            annotations: vec![(format::keys::ROOT_PARTITION.into(), "root".into())],
            layer_compression: LayerCompression::Gzip,
            zstd_level: 3,
            work_dir: work.join("work"),
        }
    }

    #[test]
    fn builds_both_forms_and_the_disk_streams_back() {
        let dir = tempfile::tempdir().unwrap();
        let disk: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
        let disk_path = dir.path().join("disk.raw");
        std::fs::write(&disk_path, &disk).unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/hello"), b"#!/bin/sh\necho hi\n").unwrap();
        std::os::unix::fs::symlink("hello", root.join("bin/hi")).unwrap();
        for form in [Layer0Form::RawDisk, Layer0Form::TarWithOneFile] {
            let img = build(&spec(dir.path(), &disk_path, form, Some(root.clone()))).unwrap();
            let m: oci_spec::image::ImageManifest = serde_json::from_slice(&img.manifest).unwrap();
            assert_eq!(format::check_layers(m.layers()).unwrap(), form);
            let mut out = Vec::new();
            form.disk_stream(File::open(&img.layers[0].path).unwrap())
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, disk, "{form:?}");
            assert_eq!(
                Digest::of(&std::fs::read(&img.layers[0].path).unwrap()),
                img.layers[0].digest
            );
            // The rootfs layer is a gzip tar with our entries.
            let mut a = tar::Archive::new(flate2::read::GzDecoder::new(
                File::open(&img.layers[1].path).unwrap(),
            ));
            let names: Vec<String> = a
                .entries()
                .unwrap()
                .map(|e| e.unwrap().path().unwrap().display().to_string())
                .collect();
            assert_eq!(names, ["bin", "bin/hello", "bin/hi"]);
            let layout = dir.path().join(format!("layout-{form:?}"));
            img.write_layout(&layout, "v1").unwrap();
            assert!(layout.join("index.json").exists());
        }
    }

    #[test]
    fn bad_settings_are_refused_before_work() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(
            dir.path(),
            Path::new("/nonexistent"),
            Layer0Form::RawDisk,
            None,
        );
        s.annotations = vec![(format::keys::ROOT_FILESYSTEM.into(), "ntfs".into())];
        let err = format!("{:#}", build(&s).unwrap_err());
        assert!(err.contains("ntfs"), "{err}");
    }
}
