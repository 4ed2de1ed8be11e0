//! Root integration tests (`root_*`, ignored by default; run with
//! `cargo test -p kiln-agent -- --ignored root_`), one module per part of the agent:
//!
//! - [`provision`]: the provisioning engine on loop devices, against `umoci unpack`.
//! - [`control`]: the control-plane client against a real `kiln-server` and registry.
//! - [`network`]: network bring-up in network namespaces with a real dnsmasq.
//!
//! They live inside the crate (not in `tests/`) because they use its test-only helpers
//! (`extract::tests::Layer`, `gpt::testimg`, `events::tests::Collect`). This module holds
//! the fixtures they share.

mod control;
mod network;
mod provision;

use std::fs;
use std::path::PathBuf;
use std::process::Command;

/// Root tests share loop devices and mounts: run them one at a time.
pub(super) fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn sh(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A loop device over a sparse file; detached (and unmounted) on drop.
pub(super) struct Loop {
    pub(super) dev: PathBuf,
    _file: tempfile::NamedTempFile,
    mounts: Vec<PathBuf>,
}

impl Loop {
    pub(super) fn new(size: u64) -> Loop {
        let f = tempfile::NamedTempFile::new_in("/var/tmp").unwrap();
        f.as_file().set_len(size).unwrap();
        let dev = sh(
            "losetup",
            &["--find", "--show", "--partscan", f.path().to_str().unwrap()],
        );
        Loop {
            dev: PathBuf::from(dev.trim()),
            _file: f,
            mounts: Vec::new(),
        }
    }
    pub(super) fn name(&self) -> String {
        self.dev.file_name().unwrap().to_string_lossy().into_owned()
    }
    pub(super) fn read_at(&self, off: u64, len: usize) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let mut v = vec![0u8; len];
        fs::File::open(&self.dev)
            .unwrap()
            .read_exact_at(&mut v, off)
            .unwrap();
        v
    }
    pub(super) fn read_all(&self) -> Vec<u8> {
        fs::read(&self.dev).unwrap()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        for m in &self.mounts {
            let _ = Command::new("umount").arg(m).status();
        }
        // Partitions may still be mounted by a failed test: lazy unmount them.
        if let Ok(mi) = fs::read_to_string("/proc/self/mountinfo") {
            for l in mi.lines() {
                let f: Vec<&str> = l.split(' ').collect();
                if let Some(sep) = f.iter().position(|x| *x == "-")
                    && f.get(sep + 2)
                        .is_some_and(|s| s.starts_with(&format!("{}p", self.dev.display())))
                {
                    let _ = Command::new("umount").args(["-l", f[4]]).status();
                }
            }
        }
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}
