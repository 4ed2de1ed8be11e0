//! Phase 7: the running agent is copied into the installed root with its config and a
//! service that starts it at boot: a systemd unit when the image has systemd, else an
//! `/etc/inittab` respawn line (busybox or sysvinit syntax).
//!
//! Files: `/usr/local/sbin/kiln-agent` (0755), `/etc/kiln/agent.json` (0600, root:root:
//! it holds the machine credential), `/etc/systemd/system/kiln-agent.service` +
//! `multi-user.target.wants` link, or an inittab line.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::confined::{RelPath, Root};
use super::events::{Event, Phase, Progress};

/// Where the binary goes.
pub const AGENT_PATH: &str = "usr/local/sbin/kiln-agent";
/// Where the config goes.
pub const CONFIG_PATH: &str = "etc/kiln/agent.json";

/// Config of the installed agent: the one file contract between the installer (this
/// phase), `install.sh` (served by the control plane) and `kiln-agent serve`, which reads it
/// and writes the machine id and credential back after registering with `token`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentConfig {
    /// Control-plane URL.
    pub url: String,
    /// SHA-256 pin of the control plane's CA certificate (hex), if any.
    pub ca_pin: Option<String>,
    /// Machine id (empty until registered).
    #[serde(default)]
    pub machine_id: String,
    /// Machine credential (secret; empty until registered).
    #[serde(default)]
    pub credential: String,
    /// Bootstrap token (secret) for a first registration (`install.sh`); dropped once
    /// registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Root-device hints for provisioning orders (`kiln.disk=` syntax).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    /// Registries spoken to over plain HTTP (labs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub insecure_registries: Vec<String>,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |s: bool| if s { "<redacted>" } else { "<none>" };
        f.debug_struct("AgentConfig")
            .field("url", &self.url)
            .field("ca_pin", &self.ca_pin)
            .field("machine_id", &self.machine_id)
            .field("credential", &redact(!self.credential.is_empty()))
            .field("token", &redact(self.token.is_some()))
            .field("disk", &self.disk)
            .field("insecure_registries", &self.insecure_registries)
            .finish()
    }
}

/// What to inject.
#[derive(Debug, Clone)]
pub struct InjectSpec {
    /// The agent binary to copy (the running one: `/proc/self/exe`).
    pub binary: PathBuf,
    /// Its config.
    pub config: AgentConfig,
    /// Arguments the service passes to the agent.
    pub args: Vec<String>,
}

/// Init system found in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// systemd.
    Systemd,
    /// busybox init with /etc/inittab.
    Busybox,
    /// sysvinit with /etc/inittab.
    Sysvinit,
}

fn exists(root: &Root, p: &str) -> bool {
    RelPath::of(p).map(|r| root.exists(&r)).unwrap_or(false)
}

/// Detects the image's init system.
pub fn detect_init(root: &Root) -> Option<Init> {
    if ["usr/lib/systemd/systemd", "lib/systemd/systemd"]
        .iter()
        .any(|p| exists(root, p))
    {
        return Some(Init::Systemd);
    }
    let init_link = RelPath::of("sbin/init").ok().and_then(|r| {
        let (dir, name) = root.parent(&r, false).ok()?;
        rustix::fs::readlinkat(
            &dir,
            std::ffi::OsStr::new(std::str::from_utf8(name).ok()?),
            Vec::new(),
        )
        .ok()
    });
    let busybox = init_link.is_some_and(|l| l.to_string_lossy().contains("busybox"))
        || (exists(root, "bin/busybox") && !exists(root, "sbin/init"));
    if busybox {
        return Some(Init::Busybox);
    }
    if exists(root, "etc/inittab") {
        return Some(Init::Sysvinit);
    }
    None
}

/// The systemd unit.
pub fn systemd_unit(args: &[String]) -> String {
    format!(
        "[Unit]\nDescription=Kiln agent\nWants=network-online.target\nAfter=network-online.target\n\n\
         [Service]\nExecStart=/{AGENT_PATH} {}\nRestart=always\nRestartSec=5\n\n[Install]\nWantedBy=multi-user.target\n",
        args.join(" ")
    )
}

/// Phase 7.
pub fn inject_agent(root: &Root, spec: &InjectSpec, progress: Progress) -> Result<Init> {
    inject_inner(root, spec, progress)
        .with_context(|| format!("injecting the agent into {}", root.path().display()))
}

fn inject_inner(root: &Root, spec: &InjectSpec, progress: Progress) -> Result<Init> {
    if spec.config.url.is_empty() || spec.config.machine_id.is_empty() {
        bail!("agent config needs a control-plane URL and a machine id");
    }
    let init = detect_init(root).context(
        "no init system recognised in the image (no systemd, busybox init or /etc/inittab)",
    )?;
    let bin = std::fs::read(&spec.binary)
        .with_context(|| format!("reading the agent binary {}", spec.binary.display()))?;
    let owner = Some((0, 0));
    root.write_file(&RelPath::of(AGENT_PATH)?, &bin, 0o755, owner)?;
    let cfg = serde_json::to_vec_pretty(&spec.config)?;
    root.mkdir_all(&RelPath::of("etc/kiln")?, 0o755)?;
    root.write_file(&RelPath::of(CONFIG_PATH)?, &cfg, 0o600, owner)?;
    let cmd = format!("/{AGENT_PATH} {}", spec.args.join(" "));
    match init {
        Init::Systemd => {
            root.write_file(
                &RelPath::of("etc/systemd/system/kiln-agent.service")?,
                systemd_unit(&spec.args).as_bytes(),
                0o644,
                owner,
            )?;
            root.symlink(
                &RelPath::of("etc/systemd/system/multi-user.target.wants/kiln-agent.service")?,
                "/etc/systemd/system/kiln-agent.service",
            )?;
        }
        Init::Busybox | Init::Sysvinit => {
            let tab = RelPath::of("etc/inittab")?;
            let mut text = if root.exists(&tab) {
                String::from_utf8_lossy(&root.read(&tab)?).into_owned()
            } else {
                // busybox's built-in defaults, which an inittab replaces.
                "::sysinit:/etc/init.d/rcS\n::askfirst:-/bin/sh\n::ctrlaltdel:/sbin/reboot\n::shutdown:/bin/umount -a -r\n::restart:/sbin/init\n".into()
            };
            if !text.contains(&format!("/{AGENT_PATH}")) {
                if !text.ends_with('\n') && !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(&match init {
                    Init::Busybox => format!("::respawn:{cmd}\n"),
                    _ => format!("kiln:2345:respawn:{cmd}\n"),
                });
            }
            root.write_file(&tab, text.as_bytes(), 0o644, owner)?;
        }
    }
    progress(Event::msg(
        Phase::Inject,
        format!("agent installed at /{AGENT_PATH}, started by {init:?}"),
    ));
    Ok(init)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::super::events::no_progress;
    use super::*;

    fn spec(dir: &std::path::Path) -> InjectSpec {
        let bin = dir.join("agent-bin");
        std::fs::write(&bin, b"\x7fELF fake").unwrap();
        InjectSpec {
            binary: bin,
            config: AgentConfig {
                url: "https://kiln.example:8443".into(),
                ca_pin: Some("ab".repeat(32)),
                machine_id: "m-1".into(),
                credential: "s3cret".into(),
                ..AgentConfig::default()
            },
            args: vec!["serve".into()],
        }
    }

    #[test]
    fn per_init_system() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("not root: chown to root impossible, skipped");
            return;
        }
        type Case<'a> = (&'a str, &'a [(&'a str, Option<&'a str>)], Option<Init>);
        let cases: &[Case] = &[
            (
                "systemd",
                &[("usr/lib/systemd/systemd", None)],
                Some(Init::Systemd),
            ),
            (
                "busybox",
                &[("bin/busybox", None), ("sbin/init", Some("../bin/busybox"))],
                Some(Init::Busybox),
            ),
            (
                "busybox no init",
                &[("bin/busybox", None)],
                Some(Init::Busybox),
            ),
            (
                "sysv",
                &[("sbin/init", None), ("etc/inittab", None)],
                Some(Init::Sysvinit),
            ),
            ("none", &[("bin/sh", None)], None),
        ];
        for (name, files, want) in cases {
            let t = tempfile::tempdir().unwrap();
            let r = t.path().join("root");
            for (p, link) in *files {
                std::fs::create_dir_all(r.join(p).parent().unwrap()).unwrap();
                match link {
                    Some(l) => std::os::unix::fs::symlink(l, r.join(p)).unwrap(),
                    None => std::fs::write(r.join(p), b"id:3:initdefault:\n").unwrap(),
                }
            }
            let root = Root::open(&r).unwrap();
            let got = inject_agent(&root, &spec(t.path()), &no_progress);
            match (want, got) {
                (None, Err(e)) => assert!(format!("{e:#}").contains("no init system"), "{e:#}"),
                (Some(w), Ok(g)) => {
                    assert_eq!(*w, g, "{name}");
                    let cfg = std::fs::metadata(r.join(CONFIG_PATH)).unwrap();
                    assert_eq!(cfg.permissions().mode() & 0o777, 0o600);
                    assert_eq!((cfg.uid(), cfg.gid()), (0, 0));
                    let c: AgentConfig =
                        serde_json::from_slice(&std::fs::read(r.join(CONFIG_PATH)).unwrap())
                            .unwrap();
                    assert_eq!(c.credential, "s3cret");
                    assert_eq!(std::fs::read(r.join(AGENT_PATH)).unwrap(), b"\x7fELF fake");
                    assert_eq!(
                        std::fs::metadata(r.join(AGENT_PATH))
                            .unwrap()
                            .permissions()
                            .mode()
                            & 0o777,
                        0o755
                    );
                    match g {
                        Init::Systemd => {
                            let l = r.join(
                                "etc/systemd/system/multi-user.target.wants/kiln-agent.service",
                            );
                            assert_eq!(
                                std::fs::read_link(l).unwrap().to_str(),
                                Some("/etc/systemd/system/kiln-agent.service")
                            );
                            let u = std::fs::read_to_string(
                                r.join("etc/systemd/system/kiln-agent.service"),
                            )
                            .unwrap();
                            assert!(u.contains("ExecStart=/usr/local/sbin/kiln-agent serve"));
                        }
                        Init::Busybox => {
                            let tab = std::fs::read_to_string(r.join("etc/inittab")).unwrap();
                            assert!(
                                tab.contains("::respawn:/usr/local/sbin/kiln-agent serve\n"),
                                "{tab}"
                            );
                            // idempotent
                            inject_agent(&root, &spec(t.path()), &no_progress).unwrap();
                            let tab2 = std::fs::read_to_string(r.join("etc/inittab")).unwrap();
                            assert_eq!(tab, tab2);
                        }
                        Init::Sysvinit => {
                            let tab = std::fs::read_to_string(r.join("etc/inittab")).unwrap();
                            assert_eq!(
                                tab,
                                "id:3:initdefault:\nkiln:2345:respawn:/usr/local/sbin/kiln-agent serve\n"
                            );
                        }
                    }
                }
                (w, g) => panic!("{name}: want {w:?} got {g:?}"),
            }
        }
    }
}
