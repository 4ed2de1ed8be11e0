//! A real `kiln-server` process on 127.0.0.1: the binary from the workspace's target dir
//! (build it first: `cargo build -p kiln-controlplane --bin kiln-server`), its data and
//! artifacts in a temp dir, ready once it printed its CA pin and the admin API key, killed
//! on drop. Callers talk to it with their own client (the agent's CA-pin bootstrap, kilnctl).

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail, ensure};

use crate::net::free_port;

/// A binary of the workspace (`kiln-server`, `kilnctl`) in `target/debug`; `kiln-server` may
/// be overridden with `KILN_SERVER_BIN`.
pub fn binary(name: &str) -> Result<PathBuf> {
    let default = || {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/debug")
            .join(name)
    };
    let p = match std::env::var_os("KILN_SERVER_BIN") {
        Some(p) if name == "kiln-server" => PathBuf::from(p),
        _ => default(),
    };
    ensure!(
        p.exists(),
        "{} is missing: cargo build -p kiln-controlplane --bins (scripts/test builds it)",
        p.display()
    );
    Ok(p)
}

/// How to start the server.
#[derive(Clone, Debug)]
pub struct Options {
    /// Names (IP addresses) its certificate is made for.
    pub tls_names: Vec<String>,
    /// `--public-url`; `https://127.0.0.1:PORT` when `None`.
    pub public_url: Option<String>,
    /// `--heartbeat-secs`.
    pub heartbeat_secs: u32,
    /// Files copied into its artifacts dir first: (name there, source).
    pub artifacts: Vec<(String, PathBuf)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tls_names: vec!["127.0.0.1".into()],
            public_url: None,
            heartbeat_secs: 2,
            artifacts: Vec::new(),
        }
    }
}

/// A running `kiln-server`; killed on drop.
pub struct Server {
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    /// Its URL on 127.0.0.1 (`https://127.0.0.1:PORT`).
    pub url: String,
    /// The URL it tells agents (`--public-url`).
    pub public_url: String,
    /// The sha256 pin of its CA, as it printed it.
    pub pin: String,
    /// The admin API key it printed at first start.
    pub admin: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Server {
    /// Starts the server with `options` and waits until it printed its pin and admin key
    /// (it listens before it prints them).
    pub fn start(options: &Options) -> Result<Server> {
        let dir = tempfile::tempdir().context("creating the kiln-server temp dir")?;
        let port = free_port();
        let url = format!("https://127.0.0.1:{port}");
        let public_url = options.public_url.clone().unwrap_or_else(|| url.clone());
        let artifacts = dir.path().join("artifacts");
        std::fs::create_dir_all(&artifacts)?;
        for (name, source) in &options.artifacts {
            std::fs::copy(source, artifacts.join(name))
                .with_context(|| format!("copying {} into the artifacts", source.display()))?;
        }
        let log = File::create(dir.path().join("server.log"))?;
        let mut cmd = Command::new(binary("kiln-server")?);
        cmd.args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--artifacts-dir")
            .arg(&artifacts)
            .args(["--public-url", &public_url])
            .args(["--heartbeat-secs", &options.heartbeat_secs.to_string()]);
        for name in &options.tls_names {
            cmd.args(["--tls-name", name]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("starting kiln-server")?;
        let mut server = Server {
            port,
            url,
            public_url,
            pin: String::new(),
            admin: String::new(),
            child,
            dir,
        };
        server.read_secrets()?;
        Ok(server)
    }

    /// Reads stdout until the admin key line; the rest of stdout goes to the log.
    fn read_secrets(&mut self) -> Result<()> {
        let stdout = self.child.stdout.take().context("kiln-server's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut pin = None;
        loop {
            let Some(Ok(l)) = lines.next() else {
                bail!("kiln-server exited: {}", self.log());
            };
            if let Some(p) = l.strip_prefix("CA sha256 pin: ") {
                pin = Some(p.trim().to_string());
            }
            if let Some((_, k)) = l.split_once("store it now): ") {
                self.admin = k.trim().to_string();
                break;
            }
        }
        self.pin = pin.context("kiln-server printed no CA pin")?;
        // Keep draining stdout so a later line never meets a closed pipe.
        let mut log = File::options()
            .append(true)
            .open(self.dir.path().join("server.log"))?;
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                let _ = writeln!(log, "{l}");
            }
        });
        Ok(())
    }

    /// Its temp dir (data, artifacts, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
