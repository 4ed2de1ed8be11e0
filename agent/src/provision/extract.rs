//! Layer extraction (layers 1+): an OCI/Docker tar layer, plain, gzip, zstd or xz (sniffed),
//! streamed onto the mounted root through [`Root`], so no entry can create, change or
//! follow anything outside it.
//!
//! Semantics follow the OCI image spec's changeset rules, as umoci applies them:
//! `.wh.NAME` deletes NAME from lower layers; `.wh..wh..opq` empties its directory of
//! everything lower layers put there (entries of the same layer stay); other `.wh..wh.*`
//! names (aufs internals) are skipped. Regular files, directories, symlinks, hardlinks,
//! character/block devices and FIFOs are created with owner, mode (incl. setuid, setgid,
//! sticky), xattrs (PAX `SCHILY.xattr.*`), and mtime (directories at the end of the layer).
//! PAX and GNU long names/links come through the `tar` crate, behind
//! [`kiln_oci::tar_guard::TarGuard`]: each is at most 1 MiB, refused before it is buffered
//! (the layer is verified only at its end).
//!
//! After the archive's end the rest of the stream is read to EOF: by the input contract
//! that is when the digest is verified, so a layer whose digest fails is an error.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use serde::{Deserialize, Serialize};
use tar::EntryType;

use super::confined::{RelPath, Root, gid, list_dir, uid};
use super::events::{Meter, Phase, Progress};
use kiln_oci::compression::{Compression, Decompressor};
use kiln_oci::tar_guard::TarGuard;

/// Extraction options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Apply owners from the archive (needs CAP_CHOWN; the installer runs as root).
    pub preserve_owner: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            preserve_owner: true,
        }
    }
}

/// Result of one layer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerReport {
    /// Compression of the layer.
    pub compression: Option<Compression>,
    /// Entries materialised.
    pub entries: u64,
    /// Whiteouts applied.
    pub whiteouts: u64,
    /// Opaque directories applied.
    pub opaque: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Compressed bytes read.
    pub read: u64,
}

/// Counts the (compressed) bytes read from the layer stream, for progress.
struct Counting<R> {
    inner: R,
    n: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(b)?;
        self.n.fetch_add(k as u64, Ordering::Relaxed);
        Ok(k)
    }
}

/// Metadata of one entry.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Timespec,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn parse_mtime(s: &str) -> Option<Timespec> {
    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
    let tv_sec: i64 = sec.parse().ok()?;
    let mut nanos = String::from(frac);
    nanos.truncate(9);
    while nanos.len() < 9 {
        nanos.push('0');
    }
    Some(Timespec {
        tv_sec,
        tv_nsec: nanos.parse().ok()?,
    })
}

/// Phase 5 for one layer: extracts `src` (a verified layer stream) onto `root`.
/// `total` is the layer's size when known (for progress).
pub fn extract_layer<R: Read + Send>(
    src: R,
    root: &Root,
    opts: &Options,
    total: Option<u64>,
    label: &str,
    progress: Progress,
) -> Result<LayerReport> {
    extract_inner(src, root, opts, total, label, progress)
        .with_context(|| format!("extracting layer {label} onto {}", root.path().display()))
}

fn extract_inner<R: Read + Send>(
    src: R,
    root: &Root,
    opts: &Options,
    total: Option<u64>,
    label: &str,
    progress: Progress,
) -> Result<LayerReport> {
    let read = Arc::new(AtomicU64::new(0));
    let counting = Counting {
        inner: src,
        n: read.clone(),
    };
    let dec = Decompressor::new(counting).context("reading the layer stream")?;
    let kind = dec.compression();
    let mut report = LayerReport {
        compression: Some(kind),
        ..Default::default()
    };
    let mut archive = tar::Archive::new(TarGuard::new(dec));
    let mut upper: HashSet<RelPath> = HashSet::new();
    let mut dir_times: Vec<(RelPath, Timespec)> = Vec::new();
    let mut meter = Meter::new(Phase::Extract, total, label.to_string(), progress);
    for entry in archive.entries().context("reading the tar stream")? {
        let mut entry = entry.context("reading a tar header")?;
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let rel = RelPath::new(&raw_path).with_context(|| format!("entry {shown:?}"))?;
        apply_entry(
            &mut entry,
            &rel,
            root,
            opts,
            &mut upper,
            &mut dir_times,
            &mut report,
        )
        .with_context(|| format!("entry {shown:?}"))?;
        meter.update(read.load(Ordering::Relaxed));
    }
    for (rel, t) in dir_times.iter().rev() {
        let times = Timestamps {
            last_access: *t,
            last_modification: *t,
        };
        if rel.is_root() {
            let fd = root.open_at(rel, OFlags::RDONLY | OFlags::DIRECTORY, 0)?;
            rustix::fs::futimens(&fd, &times)?;
        } else if let Ok((dir, name)) = root.parent(rel, false) {
            rustix::fs::utimensat(
                &dir,
                OsStr::from_bytes(name),
                &times,
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .with_context(|| format!("setting mtime of {rel}"))?;
        }
    }
    // Read to EOF: the digest verdict arrives there.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink())
        .context("reading the layer stream to its end (digest check)")?;
    drop(rest);
    report.read = read.load(Ordering::Relaxed);
    meter.finish(report.read);
    Ok(report)
}

fn apply_entry<R: Read>(
    entry: &mut tar::Entry<R>,
    rel: &RelPath,
    root: &Root,
    opts: &Options,
    upper: &mut HashSet<RelPath>,
    dir_times: &mut Vec<(RelPath, Timespec)>,
    report: &mut LayerReport,
) -> Result<()> {
    let hdr = entry.header().clone();
    let etype = hdr.entry_type();
    let meta = read_meta(entry, &hdr)?;
    if matches!(
        etype,
        EntryType::XHeader
            | EntryType::XGlobalHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink
    ) {
        return Ok(());
    }
    if apply_whiteout(rel, root, upper, report)? {
        return Ok(());
    }
    if rel.is_root() {
        if etype.is_dir() {
            let fd = root.open_at(rel, OFlags::RDONLY | OFlags::DIRECTORY, 0)?;
            set_meta_fd(&fd, &meta, opts)?;
            dir_times.push((rel.clone(), meta.mtime));
        }
        return Ok(());
    }

    let (dir, name) = root.parent(rel, true)?;
    let existing = Root::kind(&dir, name)?;
    upper.insert(rel.clone());
    let at = At { dir: &dir, name };

    if etype.is_dir() {
        apply_dir(&at, existing, &meta, opts)?;
        dir_times.push((rel.clone(), meta.mtime));
    } else if etype.is_hard_link() {
        if !apply_hardlink(entry, rel, root, &at, existing)? {
            return Ok(());
        }
    } else {
        if existing.is_some() {
            Root::remove_all_at(&dir, name).context("replacing the existing entry")?;
        }
        match etype {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                report.bytes += apply_file(entry, &at, &meta, opts)?;
            }
            EntryType::Symlink => apply_symlink(entry, &at, &meta, opts)?,
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                apply_node(&hdr, &at, &meta, opts)?
            }
            other => bail!("unsupported tar entry type {other:?}"),
        }
    }
    report.entries += 1;
    Ok(())
}

/// The entry's owner, mode, mtime and xattrs: the ustar header, then PAX records over it.
fn read_meta<R: Read>(entry: &mut tar::Entry<R>, hdr: &tar::Header) -> Result<Meta> {
    let mut meta = Meta {
        mode: numeric(hdr.mode().map(u64::from), &hdr.as_old().mode).context("bad mode")? as u32
            & 0o7777,
        uid: numeric(hdr.uid(), &hdr.as_old().uid).context("bad uid")? as u32,
        gid: numeric(hdr.gid(), &hdr.as_old().gid).context("bad gid")? as u32,
        mtime: Timespec {
            tv_sec: hdr.mtime().unwrap_or(0) as i64,
            tv_nsec: 0,
        },
        xattrs: Vec::new(),
    };
    let Some(exts) = entry.pax_extensions().context("bad PAX header")? else {
        return Ok(meta);
    };
    for ext in exts {
        let ext = ext.context("bad PAX record")?;
        let key = ext.key().context("PAX key is not UTF-8")?;
        let val = ext.value_bytes();
        let text = std::str::from_utf8(val).ok();
        if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
            meta.xattrs.push((name.to_string(), val.to_vec()));
        } else if key == "uid" {
            meta.uid = text.and_then(|v| v.parse().ok()).context("bad PAX uid")?;
        } else if key == "gid" {
            meta.gid = text.and_then(|v| v.parse().ok()).context("bad PAX gid")?;
        } else if key == "mtime" {
            meta.mtime = text.and_then(parse_mtime).context("bad PAX mtime")?;
        }
    }
    Ok(meta)
}

/// Applies `rel` if it is a whiteout (opaque directory marker, or `.wh.NAME`); true if it was.
fn apply_whiteout(
    rel: &RelPath,
    root: &Root,
    upper: &mut HashSet<RelPath>,
    report: &mut LayerReport,
) -> Result<bool> {
    let Some((parent, name)) = rel.split() else {
        return Ok(false);
    };
    if name == b".wh..wh..opq" {
        root.mkdir_all(&parent, 0o755)?;
        opaque(root, &parent, upper)?;
        report.opaque += 1;
        return Ok(true);
    }
    if name.starts_with(b".wh..wh.") {
        return Ok(true);
    }
    let Some(victim) = name.strip_prefix(b".wh.") else {
        return Ok(false);
    };
    if victim.is_empty() || victim == b"." || victim == b".." {
        bail!("invalid whiteout");
    }
    if let Ok(dir) = root.dir(&parent) {
        Root::remove_all_at(&dir, victim)
            .with_context(|| format!("removing whited-out {}", parent.join(victim)))?;
    }
    report.whiteouts += 1;
    Ok(true)
}

/// Where an entry goes: its parent directory and its name there.
struct At<'a> {
    dir: &'a OwnedFd,
    name: &'a [u8],
}

impl At<'_> {
    fn n(&self) -> &OsStr {
        OsStr::from_bytes(self.name)
    }

    /// Owner (if preserved) of the entry itself, not following a symlink.
    fn chown(&self, meta: &Meta, opts: &Options) -> Result<()> {
        if opts.preserve_owner {
            rustix::fs::chownat(
                self.dir,
                self.n(),
                Some(uid(meta.uid)),
                Some(gid(meta.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .context("chown")?;
        }
        Ok(())
    }

    /// Xattrs of the entry itself through /proc (no fd can be opened on a symlink or node).
    fn set_xattrs(&self, meta: &Meta, what: &str) -> Result<()> {
        for (k, v) in &meta.xattrs {
            let p = format!(
                "/proc/self/fd/{}/{}",
                std::os::fd::AsRawFd::as_raw_fd(self.dir),
                String::from_utf8_lossy(self.name)
            );
            rustix::fs::lsetxattr(p.as_str(), k.as_str(), v, rustix::fs::XattrFlags::empty())
                .with_context(|| format!("setting xattr {k}{what}"))?;
        }
        Ok(())
    }

    fn set_mtime(&self, meta: &Meta) -> Result<()> {
        rustix::fs::utimensat(
            self.dir,
            self.n(),
            &Timestamps {
                last_access: meta.mtime,
                last_modification: meta.mtime,
            },
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        Ok(())
    }
}

/// A directory: kept if one is there (its content merges), else created; mtime set at the end.
fn apply_dir(at: &At, existing: Option<FileType>, meta: &Meta, opts: &Options) -> Result<()> {
    let (dir, name, n) = (at.dir, at.name, at.n());
    match existing {
        Some(FileType::Directory) => {}
        Some(_) => {
            Root::remove_all_at(dir, name)?;
            rustix::fs::mkdirat(dir, n, Mode::from_raw_mode(0o700)).context("mkdir")?;
        }
        None => rustix::fs::mkdirat(dir, n, Mode::from_raw_mode(0o700)).context("mkdir")?,
    }
    let fd = rustix::fs::openat(
        dir,
        n,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .context("opening the directory")?;
    set_meta_fd(&fd, meta, opts)
}

/// A hard link to an entry already extracted; false if it links to itself (skipped).
fn apply_hardlink<R: Read>(
    entry: &tar::Entry<R>,
    rel: &RelPath,
    root: &Root,
    at: &At,
    existing: Option<FileType>,
) -> Result<bool> {
    let target_raw = entry
        .link_name_bytes()
        .context("hardlink without target")?
        .into_owned();
    let target = RelPath::new(&target_raw).context("hardlink target")?;
    if target == *rel {
        return Ok(false);
    }
    let (tdir, tname) = root
        .parent(&target, false)
        .with_context(|| format!("hardlink target {target}"))?;
    if existing.is_some() {
        Root::remove_all_at(at.dir, at.name)?;
    }
    rustix::fs::linkat(
        &tdir,
        OsStr::from_bytes(tname),
        at.dir,
        at.n(),
        AtFlags::empty(),
    )
    .with_context(|| format!("hardlinking to {target}"))?;
    Ok(true)
}

/// A regular file: content, then metadata and mtime; returns the bytes written.
fn apply_file<R: Read>(
    entry: &mut tar::Entry<R>,
    at: &At,
    meta: &Meta,
    opts: &Options,
) -> Result<u64> {
    let fd = rustix::fs::openat(
        at.dir,
        at.n(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .context("creating the file")?;
    let mut f = std::fs::File::from(fd);
    let copied = io::copy(entry, &mut f).context("writing the file content")?;
    let fd = OwnedFd::from(f);
    set_meta_fd(&fd, meta, opts)?;
    rustix::fs::futimens(
        &fd,
        &Timestamps {
            last_access: meta.mtime,
            last_modification: meta.mtime,
        },
    )?;
    Ok(copied)
}

fn apply_symlink<R: Read>(
    entry: &tar::Entry<R>,
    at: &At,
    meta: &Meta,
    opts: &Options,
) -> Result<()> {
    let target = entry
        .link_name_bytes()
        .context("symlink without target")?
        .into_owned();
    rustix::fs::symlinkat(OsStr::from_bytes(&target), at.dir, at.n())
        .context("creating the symlink")?;
    at.chown(meta, opts).context("chown of the symlink")?;
    at.set_xattrs(meta, " on the symlink")?;
    at.set_mtime(meta)
}

/// A character or block device node, or a FIFO.
fn apply_node(hdr: &tar::Header, at: &At, meta: &Meta, opts: &Options) -> Result<()> {
    let ft = match hdr.entry_type() {
        EntryType::Char => FileType::CharacterDevice,
        EntryType::Block => FileType::BlockDevice,
        _ => FileType::Fifo,
    };
    let major = hdr.device_major().ok().flatten().unwrap_or(0);
    let minor = hdr.device_minor().ok().flatten().unwrap_or(0);
    rustix::fs::mknodat(
        at.dir,
        at.n(),
        ft,
        Mode::from_raw_mode(0o600),
        rustix::fs::makedev(major, minor),
    )
    .context("creating the device node or FIFO")?;
    at.chown(meta, opts)?;
    rustix::fs::chmodat(
        at.dir,
        at.n(),
        Mode::from_raw_mode(meta.mode),
        AtFlags::empty(),
    )?;
    at.set_xattrs(meta, "")?;
    at.set_mtime(meta)
}

/// A numeric header field; a blank one (all NUL or spaces) reads as 0, as Go's
/// archive/tar (and so umoci and containerd) reads it.
fn numeric(v: io::Result<u64>, raw: &[u8]) -> io::Result<u64> {
    match v {
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
        v => v,
    }
}

/// Owner, then mode (chown clears setuid), then xattrs (chown clears security.capability).
fn set_meta_fd(fd: &OwnedFd, meta: &Meta, opts: &Options) -> Result<()> {
    if opts.preserve_owner {
        rustix::fs::fchown(fd, Some(uid(meta.uid)), Some(gid(meta.gid))).context("chown")?;
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode)).context("chmod")?;
    for (k, v) in &meta.xattrs {
        rustix::fs::fsetxattr(fd, k.as_str(), v, rustix::fs::XattrFlags::empty())
            .with_context(|| format!("setting xattr {k}"))?;
    }
    Ok(())
}

/// Empties directory `dir` of everything not created by the current layer.
fn opaque(root: &Root, dir: &RelPath, upper: &HashSet<RelPath>) -> Result<()> {
    let fd = root
        .open_at(dir, OFlags::RDONLY | OFlags::DIRECTORY, 0)
        .with_context(|| format!("opening opaque directory {dir}"))?;
    for child in list_dir(&fd)? {
        let p = dir.join(&child);
        if !upper.contains(&p) {
            Root::remove_all_at(&fd, &child)
                .with_context(|| format!("removing {p} under opaque {dir}"))?;
        } else if Root::kind(&fd, &child)? == Some(FileType::Directory) {
            opaque(root, &p, upper)?;
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::fs;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    use std::path::Path;

    use super::super::events::no_progress;
    use super::*;

    /// Builds tar layers in code, including malicious names the `tar` crate would refuse.
    pub struct Layer {
        b: tar::Builder<Vec<u8>>,
    }

    impl Layer {
        pub fn new() -> Self {
            Layer {
                b: tar::Builder::new(Vec::new()),
            }
        }

        fn header(
            &self,
            path: &[u8],
            t: EntryType,
            mode: u32,
            link: &[u8],
            size: u64,
        ) -> tar::Header {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(t);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_600_000_000);
            h.set_size(size);
            let old = h.as_old_mut();
            old.name[..path.len()].copy_from_slice(path);
            old.linkname[..link.len()].copy_from_slice(link);
            h.set_cksum();
            h
        }

        /// Raw entry with a name < 100 bytes, no validation at all.
        pub fn raw(mut self, path: &str, t: EntryType, mode: u32, link: &str, data: &[u8]) -> Self {
            let h = self.header(path.as_bytes(), t, mode, link.as_bytes(), data.len() as u64);
            self.b.append(&h, data).unwrap();
            self
        }

        pub fn dir(self, p: &str, mode: u32) -> Self {
            self.raw(p, EntryType::Directory, mode, "", b"")
        }
        pub fn file(self, p: &str, mode: u32, data: &[u8]) -> Self {
            self.raw(p, EntryType::Regular, mode, "", data)
        }
        pub fn symlink(self, p: &str, target: &str) -> Self {
            self.raw(p, EntryType::Symlink, 0o777, target, b"")
        }
        pub fn hardlink(self, p: &str, target: &str) -> Self {
            self.raw(p, EntryType::Link, 0o644, target, b"")
        }
        pub fn fifo(self, p: &str) -> Self {
            self.raw(p, EntryType::Fifo, 0o640, "", b"")
        }

        /// File with owner and PAX xattrs, via the crate's validated path (long names OK).
        #[allow(clippy::too_many_arguments)]
        pub fn rich(
            mut self,
            p: &str,
            t: EntryType,
            mode: u32,
            owner: (u64, u64),
            xattrs: &[(&str, &[u8])],
            link: Option<&str>,
            data: &[u8],
        ) -> Self {
            if !xattrs.is_empty() {
                let recs: Vec<(String, &[u8])> = xattrs
                    .iter()
                    .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
                    .collect();
                self.b
                    .append_pax_extensions(recs.iter().map(|(k, v)| (k.as_str(), *v)))
                    .unwrap();
            }
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(t);
            h.set_mode(mode);
            h.set_uid(owner.0);
            h.set_gid(owner.1);
            h.set_mtime(1_600_000_000);
            h.set_size(data.len() as u64);
            match link {
                Some(l) => self.b.append_link(&mut h, p, l).unwrap(),
                None => self.b.append_data(&mut h, p, data).unwrap(),
            }
            self
        }

        pub fn dev(mut self, p: &str, t: EntryType, major: u32, minor: u32) -> Self {
            let mut h = self.header(p.as_bytes(), t, 0o660, b"", 0);
            h.set_device_major(major).unwrap();
            h.set_device_minor(minor).unwrap();
            h.set_cksum();
            self.b.append(&h, &b""[..]).unwrap();
            self
        }

        pub fn bytes(self) -> Vec<u8> {
            self.b.into_inner().unwrap()
        }
    }

    pub fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    fn opts() -> Options {
        Options {
            preserve_owner: is_root(),
        }
    }

    fn apply(root: &Path, layer: &[u8]) -> Result<LayerReport> {
        let r = Root::open(root).unwrap();
        extract_layer(layer, &r, &opts(), None, "test", &no_progress)
    }

    /// A sandbox: `<tmp>/root` is the target, `<tmp>/outside` holds a sentinel file.
    struct Sandbox {
        t: tempfile::TempDir,
    }
    impl Sandbox {
        fn new() -> Self {
            let t = tempfile::tempdir().unwrap();
            fs::create_dir(t.path().join("root")).unwrap();
            fs::create_dir(t.path().join("outside")).unwrap();
            fs::write(t.path().join("outside/secret"), b"untouched").unwrap();
            Sandbox { t }
        }
        fn root(&self) -> std::path::PathBuf {
            self.t.path().join("root")
        }
        fn outside(&self) -> String {
            self.t.path().join("outside").to_string_lossy().into_owned()
        }
        /// Everything outside the root is as created.
        fn check_outside(&self) {
            let names: Vec<String> = fs::read_dir(self.t.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            let mut names = names;
            names.sort();
            assert_eq!(names, ["outside", "root"]);
            let inside: Vec<_> = fs::read_dir(self.t.path().join("outside"))
                .unwrap()
                .collect();
            assert_eq!(inside.len(), 1, "nothing added to outside/");
            let secret = self.t.path().join("outside/secret");
            assert_eq!(fs::read(&secret).unwrap(), b"untouched");
            let m = fs::symlink_metadata(&secret).unwrap();
            assert!(m.is_file());
            assert_eq!(m.nlink(), 1, "no hardlink to the outside file");
            assert_eq!(m.permissions().mode() & 0o7777, 0o644);
        }
    }

    #[test]
    fn tree_with_every_type() {
        let s = Sandbox::new();
        let long = format!("usr/share/{}/file", "d".repeat(120));
        let layer = Layer::new()
            .dir("./", 0o755)
            .dir("usr/", 0o755)
            .dir("usr/bin/", 0o755)
            .file("usr/bin/su", 0o4755, b"suid")
            .file("usr/bin/sg", 0o2711, b"sgid")
            .dir("tmp/", 0o1777)
            .symlink("bin", "usr/bin")
            .symlink("abs", "/etc/../../outside")
            .hardlink("usr/bin/su2", "usr/bin/su")
            .fifo("run/fifo")
            .rich(
                &long,
                EntryType::Regular,
                0o600,
                (1000, 1001),
                &[("user.kiln", b"v1")],
                None,
                b"deep",
            )
            .rich(
                "usr/bin/ping",
                EntryType::Regular,
                0o755,
                (0, 0),
                &[("user.cap", b"\x01\x00")],
                None,
                b"ping",
            )
            .rich(
                &format!("{long}.link"),
                EntryType::Symlink,
                0o777,
                (0, 0),
                &[],
                Some(&format!("/{long}")),
                b"",
            )
            .file("etc/implicit/parent", 0o644, b"x")
            .bytes();
        let r = apply(&s.root(), &layer).unwrap();
        assert!(r.entries >= 12, "{r:?}");
        let root = s.root();
        let md = |p: &str| fs::symlink_metadata(root.join(p)).unwrap();
        assert_eq!(md("usr/bin/su").permissions().mode() & 0o7777, 0o4755);
        assert_eq!(md("usr/bin/sg").permissions().mode() & 0o7777, 0o2711);
        assert_eq!(md("tmp").permissions().mode() & 0o7777, 0o1777);
        assert_eq!(
            fs::read_link(root.join("bin")).unwrap(),
            Path::new("usr/bin")
        );
        assert_eq!(
            fs::read_link(root.join("abs")).unwrap(),
            Path::new("/etc/../../outside")
        );
        assert_eq!(md("usr/bin/su2").ino(), md("usr/bin/su").ino());
        assert!(md("run/fifo").file_type().is_fifo());
        assert_eq!(fs::read(root.join(&long)).unwrap(), b"deep");
        assert_eq!(
            fs::read_link(root.join(format!("{long}.link"))).unwrap(),
            Path::new(&format!("/{long}"))
        );
        assert_eq!(md("usr/bin/su").mtime(), 1_600_000_000);
        assert_eq!(
            md("usr").mtime(),
            1_600_000_000,
            "directory mtime set after its children"
        );
        if is_root() {
            assert_eq!((md(&long).uid(), md(&long).gid()), (1000, 1001));
        }
        match xattr_get(&root.join(&long), "user.kiln") {
            Some(v) => assert_eq!(v, b"v1"),
            None => eprintln!("filesystem without user xattrs: xattr not checked"),
        }
        s.check_outside();
    }

    pub fn xattr_get(p: &Path, k: &str) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 4096];
        let n = rustix::fs::lgetxattr(p, k, &mut buf).ok()?;
        buf.truncate(n);
        Some(buf)
    }

    #[test]
    fn devices_need_root() {
        if !is_root() {
            eprintln!("not root: device nodes not tested here (root_ tests cover them)");
            return;
        }
        let s = Sandbox::new();
        let layer = Layer::new()
            .dev("dev/null", EntryType::Char, 1, 3)
            .dev("dev/loop9", EntryType::Block, 7, 9)
            .bytes();
        apply(&s.root(), &layer).unwrap();
        let m = fs::symlink_metadata(s.root().join("dev/null")).unwrap();
        assert!(m.file_type().is_char_device());
        assert_eq!(m.rdev(), rustix::fs::makedev(1, 3));
        assert!(
            fs::symlink_metadata(s.root().join("dev/loop9"))
                .unwrap()
                .file_type()
                .is_block_device()
        );
    }

    #[test]
    fn whiteouts_and_opaque_dirs() {
        let s = Sandbox::new();
        let l1 = Layer::new()
            .dir("a/", 0o755)
            .file("a/x", 0o644, b"x")
            .file("a/y", 0o644, b"y")
            .dir("b/", 0o755)
            .file("b/old", 0o644, b"old")
            .dir("b/sub/", 0o755)
            .file("b/sub/deep", 0o644, b"d")
            .dir("c/", 0o755)
            .file("c/f", 0o644, b"f")
            .dir("d/", 0o755)
            .dir("d/keep/", 0o755)
            .file("d/keep/lower", 0o644, b"l")
            .file("d/gone", 0o644, b"g")
            .bytes();
        // Opaque marker first (usual order) for b/, last for d/ (entries of the same layer stay).
        let l2 = Layer::new()
            .file("a/.wh.x", 0o644, b"")
            .dir("b/", 0o755)
            .file("b/.wh..wh..opq", 0o644, b"")
            .file("b/new", 0o644, b"new")
            .file(".wh.c", 0o644, b"")
            .dir("d/keep/", 0o755)
            .file("d/keep/upper", 0o644, b"u")
            .file("d/.wh..wh..opq", 0o644, b"")
            .file(".wh.never-existed", 0o644, b"")
            .file("a/.wh..wh.plnk", 0o644, b"")
            .bytes();
        apply(&s.root(), &l1).unwrap();
        let r = apply(&s.root(), &l2).unwrap();
        assert_eq!((r.whiteouts, r.opaque), (3, 2));
        let root = s.root();
        let ls = |p: &str| {
            let mut v: Vec<String> = fs::read_dir(root.join(p))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(ls("a"), ["y"]);
        assert_eq!(ls("b"), ["new"]);
        assert_eq!(ls(""), ["a", "b", "d"]);
        assert_eq!(ls("d"), ["keep"]);
        assert_eq!(ls("d/keep"), ["upper"]);
        s.check_outside();
    }

    #[test]
    fn escapes_are_refused_or_confined() {
        // (name, layers, must fail)
        let s0 = Sandbox::new();
        let out = s0.outside();
        drop(s0);
        let cases: Vec<(&str, Vec<Vec<u8>>, bool)> = vec![
            (
                "dotdot file",
                vec![Layer::new().file("../outside/pwned", 0o644, b"x").bytes()],
                true,
            ),
            (
                "dotdot deep",
                vec![
                    Layer::new()
                        .file("a/../../outside/pwned", 0o644, b"x")
                        .bytes(),
                ],
                true,
            ),
            (
                "dotdot dir",
                vec![Layer::new().dir("../outside/d/", 0o755).bytes()],
                true,
            ),
            (
                "dotdot whiteout",
                vec![
                    Layer::new()
                        .file("../outside/.wh.secret", 0o644, b"")
                        .bytes(),
                ],
                true,
            ),
            (
                "dotdot opaque",
                vec![
                    Layer::new()
                        .file("../outside/.wh..wh..opq", 0o644, b"")
                        .bytes(),
                ],
                true,
            ),
            (
                "absolute path is inside",
                vec![Layer::new().file("/OUT/pwned", 0o644, b"x").bytes()],
                false,
            ),
            (
                "hardlink dotdot",
                vec![Layer::new().hardlink("hl", "../outside/secret").bytes()],
                true,
            ),
            (
                "hardlink absolute host path",
                vec![Layer::new().hardlink("hl", "OUT/secret").bytes()],
                true,
            ),
            (
                "hardlink via symlinked parent",
                vec![
                    Layer::new()
                        .symlink("d", "OUT")
                        .hardlink("hl", "d/secret")
                        .bytes(),
                ],
                true,
            ),
            (
                "hardlink via relative symlink parent",
                vec![
                    Layer::new()
                        .symlink("d", "../outside")
                        .hardlink("hl", "d/secret")
                        .bytes(),
                ],
                true,
            ),
            (
                "hardlink to a symlink pointing out links the symlink",
                vec![
                    Layer::new()
                        .symlink("s", "OUT/secret")
                        .hardlink("hl", "s")
                        .bytes(),
                ],
                false,
            ),
            (
                "file through absolute symlinked parent",
                vec![
                    Layer::new()
                        .symlink("d", "OUT")
                        .file("d/pwned", 0o644, b"x")
                        .bytes(),
                ],
                true,
            ),
            (
                "file through relative symlinked parent",
                vec![
                    Layer::new()
                        .symlink("d", "../outside")
                        .file("d/pwned", 0o644, b"x")
                        .bytes(),
                ],
                true,
            ),
            (
                "file through dotdot symlink chain",
                vec![
                    Layer::new()
                        .symlink("d", "../../../../../../..")
                        .file("d/tmp/pwned", 0o644, b"x")
                        .bytes(),
                ],
                false,
            ),
            (
                "file over a symlink pointing out",
                vec![
                    Layer::new()
                        .symlink("f", "OUT/secret")
                        .file("f", 0o600, b"x")
                        .bytes(),
                ],
                false,
            ),
            (
                "dir over a symlink pointing out",
                vec![Layer::new().symlink("d", "OUT").dir("d/", 0o700).bytes()],
                false,
            ),
            (
                "fifo over a symlink pointing out",
                vec![Layer::new().symlink("f", "OUT/secret").fifo("f").bytes()],
                false,
            ),
            (
                "whiteout through symlinked parent",
                vec![
                    Layer::new().symlink("d", "OUT").bytes(),
                    Layer::new().file("d/.wh.secret", 0o644, b"").bytes(),
                ],
                false,
            ),
            (
                "whiteout through relative symlinked parent",
                vec![
                    Layer::new().symlink("d", "../outside").bytes(),
                    Layer::new().file("d/.wh.secret", 0o644, b"").bytes(),
                ],
                false,
            ),
            (
                "opaque through symlinked parent",
                vec![
                    Layer::new().symlink("d", "OUT").bytes(),
                    Layer::new().file("d/.wh..wh..opq", 0o644, b"").bytes(),
                ],
                true,
            ),
            (
                "whiteout of a symlink to outside removes only the link",
                vec![
                    Layer::new().symlink("s", "OUT").bytes(),
                    Layer::new().file(".wh.s", 0o644, b"").bytes(),
                ],
                false,
            ),
            (
                "symlink then write into its absolute target",
                vec![
                    Layer::new().symlink("etc", "OUT").bytes(),
                    Layer::new().file("etc/pwned", 0o644, b"x").bytes(),
                ],
                true,
            ),
        ];
        for (name, layers, must_fail) in cases {
            let s = Sandbox::new();
            let outside = s.outside();
            let fix = |l: &Vec<u8>| -> Vec<u8> {
                // Retarget "OUT" at the real outside directory (same length not needed: rebuild).
                let _ = &out;
                let text = l.clone();
                replace_out(&text, &outside)
            };
            let mut failed = false;
            for l in &layers {
                if let Err(e) = apply(&s.root(), &fix(l)) {
                    failed = true;
                    eprintln!("{name}: refused: {e:#}");
                    break;
                }
            }
            assert_eq!(failed, must_fail, "{name}");
            s.check_outside();
        }
    }

    /// Replaces the placeholder "OUT" (as a path or link target) by an absolute host path,
    /// re-checksumming headers. Only used in escape tests, names stay under 100 bytes.
    fn replace_out(layer: &[u8], outside: &str) -> Vec<u8> {
        let mut a = tar::Archive::new(layer);
        let mut b = tar::Builder::new(Vec::new());
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let mut h = e.header().clone();
            let sub = |bytes: &[u8]| -> Vec<u8> {
                let s = String::from_utf8_lossy(bytes).into_owned();
                if s == "OUT" || s.starts_with("OUT/") || s.starts_with("/OUT") {
                    s.replacen(
                        "OUT",
                        outside.trim_start_matches(if s.starts_with('/') { "/" } else { "" }),
                        1,
                    )
                    .into_bytes()
                } else {
                    bytes.to_vec()
                }
            };
            let name = sub(&e.path_bytes());
            let link = e.link_name_bytes().map(|l| sub(&l)).unwrap_or_default();
            let old = h.as_old_mut();
            old.name = [0; 100];
            old.name[..name.len()].copy_from_slice(&name);
            old.linkname = [0; 100];
            old.linkname[..link.len()].copy_from_slice(&link);
            h.set_cksum();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            b.append(&h, &data[..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn digest_failure_at_stream_end_is_an_error() {
        struct FailAtEof<'a>(&'a [u8]);
        impl Read for FailAtEof<'_> {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "digest mismatch for sha256:abc",
                    ));
                }
                let n = out.len().min(self.0.len());
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let s = Sandbox::new();
        let layer = Layer::new().file("a", 0o644, b"a").bytes();
        let r = Root::open(&s.root()).unwrap();
        let e = extract_layer(
            FailAtEof(&layer),
            &r,
            &opts(),
            None,
            "sha256:abc",
            &no_progress,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("digest mismatch"), "{e:#}");
    }

    #[test]
    fn oversized_pax_header_is_refused_before_buffering() {
        // A PAX header claiming 4 GiB; the source fails past 8 MiB, so buffering it shows.
        struct Limit<R>(R, u64);
        impl<R: Read> Read for Limit<R> {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                if self.1 == 0 {
                    return Err(io::Error::other(
                        "read past 8 MiB: the PAX header was buffered",
                    ));
                }
                let k = b.len().min(self.1 as usize);
                let n = self.0.read(&mut b[..k])?;
                self.1 -= n as u64;
                Ok(n)
            }
        }
        for t in [
            EntryType::XHeader,
            EntryType::GNULongName,
            EntryType::GNULongLink,
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_path("PaxHeaders.0/evil").unwrap();
            h.set_entry_type(t);
            h.set_size(4 << 30);
            h.set_cksum();
            let src = h.as_bytes().chain(io::repeat(b'a').take(4 << 30));
            let s = Sandbox::new();
            let r = Root::open(&s.root()).unwrap();
            let label = "sha256:1234abcd";
            let e = extract_layer(Limit(src, 8 << 20), &r, &opts(), None, label, &no_progress)
                .unwrap_err();
            let msg = format!("{e:#}");
            assert!(msg.contains(label), "{t:?}: {msg}");
            assert!(msg.contains("PaxHeaders.0/evil"), "{t:?}: {msg}");
            assert!(msg.contains("limit is 1048576 bytes"), "{t:?}: {msg}");
        }
    }

    #[test]
    fn compressed_layers() {
        use kiln_oci::compression::compress;
        for kind in [Compression::Gzip, Compression::Zstd, Compression::Xz] {
            let s = Sandbox::new();
            let layer = compress(
                kind,
                &Layer::new().file("etc/hostname", 0o644, b"kiln\n").bytes(),
            );
            let r = apply(&s.root(), &layer).unwrap();
            assert_eq!(r.compression, Some(kind));
            assert_eq!(fs::read(s.root().join("etc/hostname")).unwrap(), b"kiln\n");
        }
    }

    #[test]
    fn blank_numeric_fields_read_as_zero() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o640);
        // uid/gid/mtime left blank (all NUL), as some writers do.
        b.append_data(&mut h, "f", &b"hi"[..]).unwrap();
        let s = Sandbox::new();
        apply(&s.root(), &b.into_inner().unwrap()).unwrap();
        assert_eq!(fs::read(s.root().join("f")).unwrap(), b"hi");
        assert!(numeric(Err(io::Error::other("x")), b"12a\0").is_err());
        assert_eq!(numeric(Err(io::Error::other("x")), b"\0\0 ").unwrap(), 0);
    }

    #[test]
    fn mtime_parse() {
        assert_eq!(
            parse_mtime("12.5"),
            Some(Timespec {
                tv_sec: 12,
                tv_nsec: 500_000_000
            })
        );
        assert_eq!(
            parse_mtime("7"),
            Some(Timespec {
                tv_sec: 7,
                tv_nsec: 0
            })
        );
        assert_eq!(parse_mtime("x"), None);
    }
}
