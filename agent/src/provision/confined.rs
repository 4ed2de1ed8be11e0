//! A directory tree that nothing may escape: every path is resolved with
//! `openat2(RESOLVE_IN_ROOT)` below an fd of the root, the final component is never
//! followed, and `..` components are refused outright. Absolute paths and absolute symlink
//! targets met while resolving parents are taken relative to the root (as in a chroot).
//!
//! Used by layer extraction, the cloud-init seed, agent injection and boot-plan reading,
//! because the installed tree is untrusted content.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// A validated path relative to the root: components without `.`, `..` or `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelPath(pub Vec<Vec<u8>>);

impl RelPath {
    /// Cleans a path from an archive or a caller: leading `/` and `.` components dropped,
    /// `..` refused. The empty path is the root itself.
    pub fn new(p: &[u8]) -> Result<RelPath> {
        let mut out = Vec::new();
        for c in p.split(|b| *b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => bail!(
                    "path {:?} contains '..': refused (it could escape the root)",
                    String::from_utf8_lossy(p)
                ),
                c if c.contains(&0) => {
                    bail!("path {:?} contains a NUL byte", String::from_utf8_lossy(p))
                }
                c => out.push(c.to_vec()),
            }
        }
        Ok(RelPath(out))
    }

    /// From a `&str`.
    pub fn of(p: &str) -> Result<RelPath> {
        RelPath::new(p.as_bytes())
    }

    /// The parent (empty for top-level entries) and the last component.
    pub fn split(&self) -> Option<(RelPath, &[u8])> {
        let (last, parent) = self.0.split_last()?;
        Some((RelPath(parent.to_vec()), last))
    }

    /// A child.
    pub fn join(&self, name: &[u8]) -> RelPath {
        let mut v = self.0.clone();
        v.push(name.to_vec());
        RelPath(v)
    }

    /// Whether this is the root itself.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// As a relative filesystem path (`.` for the root).
    pub fn to_path(&self) -> PathBuf {
        if self.0.is_empty() {
            return PathBuf::from(".");
        }
        PathBuf::from(OsStr::from_bytes(&self.0.join(&b'/')))
    }
}

impl std::fmt::Display for RelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "/{}", String::from_utf8_lossy(&self.0.join(&b'/')))
    }
}

/// A confined tree.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

impl Root {
    /// Opens the directory `path` as a root.
    pub fn open(path: &Path) -> Result<Root> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening {} as the target root", path.display()))?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The host path of the root (for messages and external tools).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `rel` (following symlinks, but only inside the root).
    pub fn open_at(&self, rel: &RelPath, flags: OFlags, mode: u32) -> io::Result<OwnedFd> {
        Ok(rustix::fs::openat2(
            &self.fd,
            rel.to_path(),
            flags | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
            RESOLVE,
        )?)
    }

    /// An O_PATH fd of directory `rel` (symlinks in it resolved inside the root).
    pub fn dir(&self, rel: &RelPath) -> io::Result<OwnedFd> {
        self.open_at(rel, OFlags::PATH | OFlags::DIRECTORY, 0)
    }

    /// Creates directory `rel` and missing parents (mode `mode`, owned by the caller),
    /// returns an O_PATH fd of it.
    pub fn mkdir_all(&self, rel: &RelPath, mode: u32) -> Result<OwnedFd> {
        match self.dir(rel) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {}
            Err(e) => return Err(e).with_context(|| format!("opening directory {rel}")),
        }
        let mut cur = RelPath(Vec::new());
        let mut fd = self.dir(&cur).context("opening the root")?;
        for c in &rel.0 {
            let next = cur.join(c);
            fd = match self.dir(&next) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {
                    match rustix::fs::mkdirat(&fd, OsStr::from_bytes(c), Mode::from_raw_mode(mode))
                    {
                        Ok(()) => {}
                        Err(Errno::EXIST) => {
                            bail!(
                                "cannot create directory {next}: a dangling symlink or non-directory is in the way"
                            )
                        }
                        Err(e) => {
                            return Err(e).with_context(|| format!("creating directory {next}"));
                        }
                    }
                    self.dir(&next)
                        .with_context(|| format!("opening new directory {next}"))?
                }
                Err(e) => return Err(e).with_context(|| format!("opening directory {next}")),
            };
            cur = next;
        }
        Ok(fd)
    }

    /// The parent fd of `rel` (parents created if `create`) and the final name.
    pub fn parent<'a>(&self, rel: &'a RelPath, create: bool) -> Result<(OwnedFd, &'a [u8])> {
        let (parent, name) = rel.split().context("the root itself has no parent")?;
        let fd = if create {
            self.mkdir_all(&parent, 0o755)?
        } else {
            self.dir(&parent)
                .with_context(|| format!("opening directory {parent}"))?
        };
        Ok((fd, name))
    }

    /// Type of `name` in `dir` without following it; None if absent.
    pub fn kind(dir: &OwnedFd, name: &[u8]) -> io::Result<Option<FileType>> {
        match rustix::fs::statat(dir, OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes `name` in `dir`, recursively for directories, never following symlinks.
    pub fn remove_all_at(dir: &OwnedFd, name: &[u8]) -> io::Result<()> {
        let n = OsStr::from_bytes(name);
        match Root::kind(dir, name)? {
            None => Ok(()),
            Some(FileType::Directory) => {
                let sub = rustix::fs::openat(
                    dir,
                    n,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                for child in list_dir(&sub)? {
                    Root::remove_all_at(&sub, &child)?;
                }
                Ok(rustix::fs::unlinkat(dir, n, AtFlags::REMOVEDIR)?)
            }
            Some(_) => Ok(rustix::fs::unlinkat(dir, n, AtFlags::empty())?),
        }
    }

    /// Writes a regular file (replacing whatever is there), then owner and mode.
    pub fn write_file(
        &self,
        rel: &RelPath,
        data: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<()> {
        let (dir, name) = self.parent(rel, true)?;
        if Root::kind(&dir, name)?.is_some() {
            Root::remove_all_at(&dir, name).with_context(|| format!("replacing {rel}"))?;
        }
        let fd = rustix::fs::openat(
            &dir,
            OsStr::from_bytes(name),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .with_context(|| format!("creating {rel}"))?;
        let mut f = std::fs::File::from(fd);
        f.write_all(data)
            .with_context(|| format!("writing {rel}"))?;
        if let Some((u, g)) = owner {
            rustix::fs::fchown(&f, Some(uid(u)), Some(gid(g)))
                .with_context(|| format!("chown {rel}"))?;
        }
        rustix::fs::fchmod(&f, Mode::from_raw_mode(mode))
            .with_context(|| format!("chmod {rel}"))?;
        f.sync_all().with_context(|| format!("syncing {rel}"))?;
        Ok(())
    }

    /// Creates (or replaces) symlink `rel` -> `target`.
    pub fn symlink(&self, rel: &RelPath, target: &str) -> Result<()> {
        let (dir, name) = self.parent(rel, true)?;
        if Root::kind(&dir, name)?.is_some() {
            Root::remove_all_at(&dir, name).with_context(|| format!("replacing {rel}"))?;
        }
        rustix::fs::symlinkat(target, &dir, OsStr::from_bytes(name))
            .with_context(|| format!("creating symlink {rel}"))?;
        Ok(())
    }

    /// Reads a file (symlinks followed inside the root).
    pub fn read(&self, rel: &RelPath) -> Result<Vec<u8>> {
        let fd = self
            .open_at(rel, OFlags::RDONLY, 0)
            .with_context(|| format!("opening {rel}"))?;
        let mut v = Vec::new();
        std::fs::File::from(fd)
            .read_to_end(&mut v)
            .with_context(|| format!("reading {rel}"))?;
        Ok(v)
    }

    /// Whether `rel` exists (symlinks followed inside the root).
    pub fn exists(&self, rel: &RelPath) -> bool {
        self.open_at(rel, OFlags::PATH, 0).is_ok()
    }

    /// Lists a directory (symlinks followed inside the root); empty if absent.
    pub fn list(&self, rel: &RelPath) -> Result<Vec<Vec<u8>>> {
        match self.open_at(rel, OFlags::RDONLY | OFlags::DIRECTORY, 0) {
            Ok(fd) => Ok(list_dir(&fd)?),
            Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => Ok(Vec::new()),
            Err(e) => Err(e).with_context(|| format!("listing {rel}")),
        }
    }
}

/// Names in a directory fd opened for reading, without `.` and `..`.
pub fn list_dir(fd: &impl AsFd) -> io::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut d = rustix::fs::Dir::read_from(fd)?;
    for e in d.by_ref() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(n.to_vec());
        }
    }
    Ok(out)
}

/// uid helper.
pub fn uid(u: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(u)
}

/// gid helper.
pub fn gid(g: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(g)
}
