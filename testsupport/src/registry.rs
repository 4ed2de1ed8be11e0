//! A real `docker-registry` (Debian's package, distribution 2.8) on 127.0.0.1 with its
//! config and storage in a temp dir, killed on drop; and a kiln-oci client for it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kiln_oci::registry::{Client, ClientConfig, Credentials, HostConfig, RetryPolicy, Secret};

use crate::net::{free_port, wait_for_port};

/// How a registry instance authenticates.
pub enum Auth {
    /// Anonymous.
    None,
    /// htpasswd (bcrypt) with one user.
    Htpasswd { user: String, password: String },
    /// Token auth trusting `cert` (PEM), tokens from `realm`.
    Token {
        realm: String,
        service: String,
        issuer: String,
        cert: PathBuf,
    },
}

/// A running docker-registry.
pub struct Registry {
    pub port: u16,
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Registry {
    pub fn start(auth: Auth) -> Self {
        Self::start_with(auth, None)
    }

    /// Starts an instance serving HTTPS with `tls` = (certificate, key) when given.
    pub fn start_with(auth: Auth, tls: Option<(&Path, &Path)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let auth_yaml = match auth {
            Auth::None => String::new(),
            Auth::Htpasswd { user, password } => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", &user, &password])
                    .output()
                    .expect("htpasswd (apache2-utils)");
                assert!(out.status.success(), "htpasswd failed");
                let path = dir.path().join("htpasswd");
                std::fs::write(&path, out.stdout).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                    path.display()
                )
            }
            Auth::Token {
                realm,
                service,
                issuer,
                cert,
            } => format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
                cert.display()
            ),
        };
        let tls_yaml = match tls {
            Some((cert, key)) => format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ),
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{tls_yaml}{auth_yaml}",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log_path = dir.path().join("registry.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("starting /usr/bin/docker-registry (Debian package docker-registry)");
        wait_for_port("docker-registry", port, &mut child, &log_path);
        Self { port, child, dir }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client for plain-HTTP hosts with fast retries.
pub fn client_for(hosts: &[&str], credentials: Option<(&str, &str)>) -> Client {
    let mut config = ClientConfig {
        retry: RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(200),
            max_resumes_without_progress: 5,
        },
        read_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    for h in hosts {
        config.hosts.insert(
            (*h).to_owned(),
            HostConfig {
                plain_http: true,
                credentials: credentials.map(|(u, p)| Credentials {
                    username: u.into(),
                    password: Secret::new(p),
                }),
                ..Default::default()
            },
        );
    }
    Client::new(config)
}
