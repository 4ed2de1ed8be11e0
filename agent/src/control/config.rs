//! Where the agent finds its control plane and who it is there.
//!
//! Two sources, one result ([`Config`]):
//! - the installer: the kernel command line (`kiln.url=`, `kiln.ca=`, `kiln.token=`,
//!   `kiln.disk=`, `kiln.insecure-registry=`), with the identity kept in
//!   `/run/kiln/agent.json` so a retry of the supervisor does not register a second time;
//! - an installed system: `/etc/kiln/agent.json` ([`AgentConfig`]), written by the
//!   provisioning engine's injection phase or by `install.sh`. After registering with the
//!   file's bootstrap token the agent writes its machine id and credential back and drops the
//!   token.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use kiln_protocol::AgentEnvironment;
use uuid::Uuid;

use crate::cmdline::{Secret, Settings};
use crate::provision::inject::AgentConfig;

/// The installed system's config file.
pub const INSTALLED_CONFIG: &str = "/etc/kiln/agent.json";
/// The installer's state file (tmpfs): the identity across supervisor retries.
pub const INSTALLER_STATE: &str = "/run/kiln/agent.json";

/// The machine's identity at the control plane.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    pub machine_uuid: Uuid,
    pub credential: Secret,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("machine_uuid", &self.machine_uuid)
            .field("credential", &"<redacted>")
            .finish()
    }
}

/// Everything the control-plane client needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Base URL, without a trailing slash.
    pub server: String,
    /// Hex SHA-256 of the CA certificate's DER bytes.
    pub ca_pin: Option<String>,
    pub token: Option<Secret>,
    pub identity: Option<Identity>,
    /// Root-device hints for provisioning orders.
    pub disk_hints: Option<String>,
    pub insecure_registries: Vec<String>,
    pub environment: AgentEnvironment,
    /// Where the identity is saved (an [`AgentConfig`] file, mode 0600).
    pub state_file: PathBuf,
    /// Where the CA certificate is kept once fetched and checked against the pin.
    pub ca_file: PathBuf,
    /// Scratch space for provisioning (mount point, staged kernel).
    pub work_dir: PathBuf,
}

/// `sha256:<hex>` or `<hex>` to lower-case hex; `None` if it is not 64 hex digits.
pub fn pin_hex(pin: &str) -> Option<String> {
    let hex = pin.trim();
    let hex = hex
        .strip_prefix("sha256:")
        .unwrap_or(hex)
        .to_ascii_lowercase();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

fn check_url(url: &str, what: &str) -> Result<String> {
    let url = url.trim().trim_end_matches('/');
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        bail!("{what}: control-plane URL {url:?} is not http(s)://");
    }
    Ok(url.to_string())
}

impl Config {
    /// The installer's config from the kernel command line; `None` without `kiln.url=`.
    /// `saved` is the state file's content from an earlier attempt, if any.
    pub fn from_cmdline(
        s: &Settings,
        state_dir: &Path,
        saved: Option<&str>,
    ) -> Result<Option<Config>> {
        let Some(url) = &s.url else {
            return Ok(None);
        };
        let server = check_url(url, "kiln.url")?;
        let mut cfg = Config {
            server,
            ca_pin: s.ca_pin.as_deref().and_then(pin_hex),
            token: s.token.clone(),
            identity: None,
            disk_hints: s.disk.clone(),
            insecure_registries: s.insecure_registries.clone(),
            environment: AgentEnvironment::Installer,
            state_file: state_dir.join("agent.json"),
            ca_file: state_dir.join("ca.pem"),
            work_dir: state_dir.join("provision"),
        };
        // kiln.machine= + kiln.credential=: an installed system kexeced back into the
        // installer to be re-provisioned; it reconnects as itself, without approval.
        if let (Some(id), Some(cred)) = (&s.machine_id, &s.credential) {
            let machine_uuid = id
                .parse()
                .map_err(|e| anyhow::anyhow!("kiln.machine={id:?} is not a machine UUID ({e})"))?;
            cfg.identity = Some(Identity {
                machine_uuid,
                credential: cred.clone(),
            });
        }
        if let Some(text) = saved {
            // Only an identity at the same server is reused.
            if let Ok(old) = serde_json::from_str::<AgentConfig>(text)
                && old.url.trim_end_matches('/') == cfg.server
            {
                cfg.identity = identity_of(&old);
            }
        }
        Ok(Some(cfg))
    }

    /// An installed system's config file (`path` names it in errors).
    pub fn from_file(text: &str, path: &Path) -> Result<Config> {
        let c: AgentConfig = serde_json::from_str(text)
            .with_context(|| format!("{} is not a Kiln agent config (JSON)", path.display()))?;
        let server = check_url(&c.url, &path.display().to_string())?;
        let ca_pin = match &c.ca_pin {
            None => None,
            Some(p) => Some(pin_hex(p).with_context(|| {
                format!(
                    "{}: ca_pin {p:?} is not a SHA-256 (64 hex digits)",
                    path.display()
                )
            })?),
        };
        let identity = identity_of(&c);
        if identity.is_none() && c.token.is_none() {
            bail!(
                "{} has neither a machine credential nor a bootstrap token: re-run install.sh \
                 with KILN_TOKEN=...",
                path.display()
            );
        }
        let dir = path.parent().unwrap_or(Path::new("/etc/kiln"));
        Ok(Config {
            server,
            ca_pin,
            token: c.token.clone().map(Secret::new),
            identity,
            disk_hints: c.disk.clone(),
            insecure_registries: c.insecure_registries.clone(),
            environment: AgentEnvironment::Installed,
            state_file: path.to_path_buf(),
            ca_file: dir.join("ca.pem"),
            work_dir: std::env::temp_dir().join("kiln-provision"),
        })
    }

    /// The file form: what is saved after registering, and injected into the installed
    /// system (there without the token).
    pub fn to_file(&self) -> AgentConfig {
        AgentConfig {
            url: self.server.clone(),
            ca_pin: self.ca_pin.clone(),
            machine_id: self
                .identity
                .as_ref()
                .map(|i| i.machine_uuid.to_string())
                .unwrap_or_default(),
            credential: self
                .identity
                .as_ref()
                .map(|i| i.credential.expose().to_string())
                .unwrap_or_default(),
            token: match self.identity {
                Some(_) => None,
                None => self.token.as_ref().map(|t| t.expose().to_string()),
            },
            disk: self.disk_hints.clone(),
            insecure_registries: self.insecure_registries.clone(),
        }
    }

    /// Saves [`Config::to_file`] to the state file (0600, written to a temp file and
    /// renamed).
    pub fn save(&self) -> Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = &self.state_file;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(&self.to_file())?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(&text)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
    }
}

fn identity_of(c: &AgentConfig) -> Option<Identity> {
    let machine_uuid = c.machine_id.parse().ok()?;
    (!c.credential.is_empty()).then(|| Identity {
        machine_uuid,
        credential: Secret::new(c.credential.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn pins() {
        for (input, want) in [
            (format!("sha256:{PIN}"), Some(PIN.to_string())),
            (PIN.to_uppercase(), Some(PIN.to_string())),
            ("sha256:abc".to_string(), None),
            (format!("{PIN}0"), None),
        ] {
            assert_eq!(pin_hex(&input), want, "{input}");
        }
    }

    #[test]
    fn from_cmdline_table() {
        let dir = Path::new("/run/kiln");
        let none = Settings::parse("console=ttyS0").settings;
        assert!(Config::from_cmdline(&none, dir, None).unwrap().is_none());

        let s = Settings::parse(&format!(
            "kiln.url=https://cp:8443/ kiln.ca=sha256:{PIN} kiln.token=TOK kiln.disk=name=vda \
             kiln.insecure-registry=10.0.2.100:5000"
        ))
        .settings;
        let c = Config::from_cmdline(&s, dir, None).unwrap().unwrap();
        assert_eq!(c.server, "https://cp:8443");
        assert_eq!(c.ca_pin.as_deref(), Some(PIN));
        assert_eq!(c.token.as_ref().map(Secret::expose), Some("TOK"));
        assert_eq!(c.disk_hints.as_deref(), Some("name=vda"));
        assert_eq!(c.insecure_registries, ["10.0.2.100:5000"]);
        assert_eq!(c.environment, AgentEnvironment::Installer);
        assert!(c.identity.is_none());
        assert_eq!(c.state_file, Path::new("/run/kiln/agent.json"));

        // A saved identity of the same server is reused; of another server, not.
        let id = "6f1c7a2e-7d5e-4a53-9d4b-5b0b7a3f0c11";
        let saved =
            format!(r#"{{"url":"https://cp:8443","machine_id":"{id}","credential":"kmc_x"}}"#);
        let c = Config::from_cmdline(&s, dir, Some(&saved))
            .unwrap()
            .unwrap();
        let ident = c.identity.unwrap();
        assert_eq!(ident.machine_uuid.to_string(), id);
        assert_eq!(ident.credential.expose(), "kmc_x");
        let other = saved.replace("cp:8443", "other:8443");
        let c = Config::from_cmdline(&s, dir, Some(&other))
            .unwrap()
            .unwrap();
        assert!(c.identity.is_none());
    }

    #[test]
    fn from_file_table() {
        let p = Path::new("/etc/kiln/agent.json");
        let id = "6f1c7a2e-7d5e-4a53-9d4b-5b0b7a3f0c11";
        // Injected by the installer: identity, no token.
        let injected = format!(
            r#"{{"url":"https://cp:8443","ca_pin":"{PIN}","machine_id":"{id}","credential":"kmc_s"}}"#
        );
        let c = Config::from_file(&injected, p).unwrap();
        assert_eq!(c.environment, AgentEnvironment::Installed);
        assert_eq!(c.identity.as_ref().unwrap().machine_uuid.to_string(), id);
        assert_eq!(c.ca_file, Path::new("/etc/kiln/ca.pem"));
        // Written by install.sh: token, no identity.
        let c = Config::from_file(
            &format!(r#"{{"url":"https://cp:8443","ca_pin":"sha256:{PIN}","token":"eyJ"}}"#),
            p,
        )
        .unwrap();
        assert!(c.identity.is_none());
        assert_eq!(c.token.as_ref().unwrap().expose(), "eyJ");
        assert_eq!(c.to_file().token.as_deref(), Some("eyJ"));

        for (text, want) in [
            ("not json", "is not a Kiln agent config"),
            (r#"{"url":"ftp://x","token":"t"}"#, "is not http(s)://"),
            (
                r#"{"url":"https://x","ca_pin":"abc","token":"t"}"#,
                "ca_pin",
            ),
            (r#"{"url":"https://x"}"#, "neither a machine credential"),
        ] {
            let e = format!("{:#}", Config::from_file(text, p).unwrap_err());
            assert!(e.contains(want), "{text}: {e}");
            assert!(
                e.contains("/etc/kiln/agent.json") || want == "is not http(s)://",
                "{e}"
            );
        }
    }

    #[test]
    fn save_round_trips_drops_token_and_hides_secrets() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("agent.json");
        let mut c = Config::from_file(
            r#"{"url":"https://cp:8443","token":"TOKEN-SECRET","disk":"name=sda"}"#,
            &path,
        )
        .unwrap();
        c.identity = Some(Identity {
            machine_uuid: Uuid::nil(),
            credential: Secret::new("kmc_SECRET"),
        });
        c.save().unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = Config::from_file(&std::fs::read_to_string(&path).unwrap(), &path).unwrap();
        assert!(back.token.is_none(), "token dropped once registered");
        assert_eq!(back.identity, c.identity);
        assert_eq!(back.disk_hints.as_deref(), Some("name=sda"));
        let dbg = format!("{c:?} {:?}", c.to_file());
        assert!(!dbg.contains("SECRET"), "{dbg}");
    }
}
