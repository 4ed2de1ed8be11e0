//! Phase 6: the cloud-init NoCloud seed, written into the installed root at
//! `/var/lib/cloud/seed/nocloud/` (`meta-data`, `user-data`, optional `network-config`
//! and `vendor-data`).
//!
//! Why there: it is the NoCloud datasource's local seed directory. cloud-init's
//! `ds-identify` finds `meta-data` + `user-data` there on first boot without a config
//! drive, a kernel argument, or a metadata server, so the installed system needs nothing
//! but its own disk. The `instance-id` in meta-data is new per provisioning, which makes
//! cloud-init treat the boot as a first boot even if the image was booted before it was
//! captured.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::confined::{RelPath, Root};
use super::events::{Event, Phase, Progress};

/// Directory of the seed inside the installed root.
pub const SEED_DIR: &str = "var/lib/cloud/seed/nocloud";

/// What the provisioning order supplies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seed {
    /// meta-data `instance-id` (required; unique per provisioning).
    pub instance_id: String,
    /// meta-data `local-hostname`.
    pub hostname: Option<String>,
    /// user-data (cloud-config, script, or MIME multipart), verbatim.
    pub user_data: String,
    /// network-config (v1 or v2 YAML), verbatim.
    pub network_config: Option<String>,
    /// vendor-data, verbatim.
    pub vendor_data: Option<String>,
}

/// meta-data text. JSON is valid YAML, and serde_json quotes every value correctly.
pub fn meta_data(seed: &Seed) -> Result<String> {
    let mut m = serde_json::Map::new();
    m.insert("instance-id".into(), seed.instance_id.clone().into());
    if let Some(h) = &seed.hostname {
        m.insert("local-hostname".into(), h.clone().into());
    }
    Ok(serde_json::to_string_pretty(&m)? + "\n")
}

/// Writes the seed (files 0600 root-owned: user-data often carries secrets).
pub fn write_seed(root: &Root, seed: &Seed, progress: Progress) -> Result<()> {
    write_inner(root, seed, progress)
        .with_context(|| format!("writing the NoCloud seed into {}", root.path().display()))
}

fn write_inner(root: &Root, seed: &Seed, progress: Progress) -> Result<()> {
    if seed.instance_id.trim().is_empty() {
        bail!("the provisioning order has no instance-id for cloud-init");
    }
    let dir = RelPath::of(SEED_DIR)?;
    root.mkdir_all(&dir, 0o755)?;
    let owner = Some((0, 0));
    root.write_file(
        &dir.join(b"meta-data"),
        meta_data(seed)?.as_bytes(),
        0o600,
        owner,
    )?;
    root.write_file(
        &dir.join(b"user-data"),
        seed.user_data.as_bytes(),
        0o600,
        owner,
    )?;
    for (name, v) in [
        ("network-config", &seed.network_config),
        ("vendor-data", &seed.vendor_data),
    ] {
        if let Some(v) = v {
            root.write_file(&dir.join(name.as_bytes()), v.as_bytes(), 0o600, owner)?;
        }
    }
    let has_ci = [
        "usr/bin/cloud-init",
        "bin/cloud-init",
        "usr/local/bin/cloud-init",
    ]
    .iter()
    .any(|p| RelPath::of(p).map(|r| root.exists(&r)).unwrap_or(false));
    progress(Event::msg(
        Phase::CloudInit,
        if has_ci {
            format!("NoCloud seed written to /{SEED_DIR}")
        } else {
            format!(
                "NoCloud seed written to /{SEED_DIR}, but the image has no cloud-init binary: it will not run"
            )
        },
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::super::events::no_progress;
    use super::*;

    #[test]
    fn seed_files() {
        let t = tempfile::tempdir().unwrap();
        // A hostile image: /var/lib/cloud is a symlink to the host's /tmp. Writes stay inside.
        std::fs::create_dir_all(t.path().join("var/lib")).unwrap();
        std::fs::create_dir_all(t.path().join("tmp")).unwrap();
        std::os::unix::fs::symlink("/tmp", t.path().join("var/lib/cloud")).unwrap();
        let root = Root::open(t.path()).unwrap();
        let seed = Seed {
            instance_id: "kiln-42".into(),
            hostname: Some("node: 1".into()),
            user_data: "#cloud-config\nruncmd: [true]\n".into(),
            network_config: Some("version: 2\n".into()),
            vendor_data: None,
        };
        if !rustix::process::geteuid().is_root() {
            return; // chown to 0 needs root
        }
        write_seed(&root, &seed, &no_progress).unwrap();
        let d = t.path().join("tmp/seed/nocloud");
        let md: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("meta-data")).unwrap()).unwrap();
        assert_eq!(md["instance-id"], "kiln-42");
        assert_eq!(md["local-hostname"], "node: 1");
        assert_eq!(
            std::fs::read_to_string(d.join("user-data")).unwrap(),
            seed.user_data
        );
        assert_eq!(
            std::fs::read_to_string(d.join("network-config")).unwrap(),
            "version: 2\n"
        );
        assert!(!d.join("vendor-data").exists());
        assert_eq!(
            std::fs::metadata(d.join("user-data"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }

    #[test]
    fn instance_id_required() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::open(t.path()).unwrap();
        let e = write_seed(&root, &Seed::default(), &no_progress).unwrap_err();
        assert!(format!("{e:#}").contains("instance-id"));
    }
}
