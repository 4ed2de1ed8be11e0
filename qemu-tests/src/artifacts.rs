//! Where the build outputs the VM tests boot are, with clear errors when one is missing.

use anyhow::{Context as _, Result, bail};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// The build output directory: `$KILN_OUT`, else `<workspace>/out`.
pub fn out_dir() -> PathBuf {
    std::env::var_os("KILN_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("out"))
}

/// The workspace root (parent of this crate).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A build output that must exist.
pub fn require(rel: &str) -> Result<PathBuf> {
    let p = out_dir().join(rel);
    if !p.is_file() {
        bail!(
            "missing {}: build it first (scripts/build, or scripts/test vm)",
            p.display()
        );
    }
    Ok(p)
}

pub fn bare_kernel() -> Result<PathBuf> {
    require("kernel/bzImage")
}

pub fn initramfs() -> Result<PathBuf> {
    require("initramfs.cpio.zst")
}

pub fn installer() -> Result<PathBuf> {
    require("kiln-installer.vmlinuz")
}

/// An ISO for tests, built once per test process by scripts/build-iso with `cmdline`
/// baked in (e.g. `kiln.debug`), into out/test/.
pub fn test_iso(cmdline: &str) -> Result<PathBuf> {
    static ISO: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    ISO.get_or_init(|| {
        let out = out_dir().join("test/kiln-test.iso");
        let run = || -> Result<PathBuf> {
            installer()?;
            std::fs::create_dir_all(out.parent().context("iso dir")?)?;
            let status = std::process::Command::new(workspace().join("scripts/build-iso"))
                .args(["--cmdline", cmdline, "--out"])
                .arg(&out)
                .status()
                .context("running scripts/build-iso")?;
            if !status.success() {
                bail!("scripts/build-iso failed ({status})");
            }
            Ok(out.clone())
        };
        run().map_err(|e| format!("{e:#}"))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}
