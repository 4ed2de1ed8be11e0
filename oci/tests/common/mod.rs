//! Harness for the root-tier registry tests: a real `docker-registry` (distribution 2.8) on
//! 127.0.0.1 with config and storage in a temp dir, and a fault proxy between client and
//! registry. Everything is torn down by Drop guards.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kiln_oci::builder::{BuildSpec, BuiltImage, LayerCompression, build};
use kiln_oci::format::{Layer0Form, keys};
use kiln_oci::registry::{Client, ClientConfig, Credentials, HostConfig, RetryPolicy, Secret};

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "docker-registry exited ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "docker-registry did not listen on {port}: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

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

/// A test CA and a server certificate for 127.0.0.1 signed by it (openssl CLI).
pub struct TestPki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn make_pki(dir: &Path) -> TestPki {
    let p = |n: &str| dir.join(n).display().to_string();
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        &p("ca.key"),
    ]);
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        &p("ca.key"),
        "-subj",
        "/CN=kiln-test-ca",
        "-days",
        "2",
        "-out",
        &p("ca.pem"),
    ]);
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        &p("server.key"),
    ]);
    openssl(&[
        "req",
        "-new",
        "-key",
        &p("server.key"),
        "-subj",
        "/CN=127.0.0.1",
        "-out",
        &p("server.csr"),
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p("server.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p("ext.cnf"),
        "-out",
        &p("server.pem"),
    ]);
    TestPki {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
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
        wait_for_port(port, &mut child, &log_path);
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

/// Deterministic incompressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A test image: an incompressible "disk" and a rootfs with a few files.
pub struct TestImage {
    pub dir: tempfile::TempDir,
    pub disk: Vec<u8>,
    pub image: BuiltImage,
}

pub fn test_image(disk_len: usize, form: Layer0Form) -> TestImage {
    let dir = tempfile::tempdir().unwrap();
    let disk = noise(disk_len, 42);
    let disk_path = dir.path().join("disk.raw");
    std::fs::write(&disk_path, &disk).unwrap();
    let root = dir.path().join("rootfs");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/hostname"), "kiln-test\n").unwrap();
    std::fs::write(root.join("etc/blob"), noise(3 << 20, 7)).unwrap();
    let image = build(&BuildSpec {
        disk: disk_path,
        layer0_form: form,
        rootfs: Some(root),
        annotations: vec![
            (keys::ROOT_PARTITION.into(), "root".into()),
            (keys::KERNEL_ARGS.into(), "console=ttyS0".into()),
        ],
        layer_compression: LayerCompression::Gzip,
        zstd_level: 1,
        work_dir: dir.path().join("work"),
    })
    .unwrap();
    TestImage { dir, disk, image }
}

/// What the fault proxy does.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    /// Blob GETs cut mid-body (connection closed after half the body) this many times per blob.
    pub cuts_per_blob: u32,
    /// Blob GETs answered with a short Content-Length and clean close, this many times per blob.
    pub clean_truncations_per_blob: u32,
    /// Every blob GET is truncated (never a full body).
    pub always_truncate: bool,
    /// Statuses answered instead of forwarding, for the first requests of every path.
    pub statuses: Vec<u16>,
    /// Blob digest whose body gets one byte flipped in every response.
    pub flip: Option<String>,
    /// Answer blob GETs with a 307 redirect to the same path on this port (blob storage).
    pub redirect_blobs_to: Option<u16>,
    /// The first this-many upload PATCHes reach the registry with half their body, then the
    /// connection is cut both ways.
    pub cut_patches: u32,
}

#[derive(Default)]
struct PathState {
    requests: u32,
    cuts: u32,
    truncations: u32,
}

#[derive(Default)]
pub struct ProxyStats {
    pub cuts: u32,
    pub truncations: u32,
    pub statuses: u32,
    pub flips: u32,
    pub requests: u32,
    pub patches: u32,
    pub patches_cut: u32,
    pub final_puts: u32,
}

struct Shared {
    plan: FaultPlan,
    paths: HashMap<String, PathState>,
    stats: ProxyStats,
}

/// A fault-injecting HTTP/1.1 proxy in front of a registry (one request per connection).
pub struct FaultProxy {
    pub port: u16,
    stop: Arc<AtomicBool>,
    shared: Arc<Mutex<Shared>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    pub fn start(upstream: u16, plan: FaultPlan) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Mutex::new(Shared {
            plan,
            paths: HashMap::new(),
            stats: ProxyStats::default(),
        }));
        let (s, sh) = (stop.clone(), shared.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        conn.set_nonblocking(false).unwrap();
                        let sh = sh.clone();
                        std::thread::spawn(move || {
                            let _ = handle(conn, upstream, &sh);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            port,
            stop,
            shared,
            thread: Some(thread),
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn stats<T>(&self, f: impl FnOnce(&ProxyStats) -> T) -> T {
        f(&self.shared.lock().unwrap().stats)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_head(r: &mut impl BufRead) -> std::io::Result<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other("eof in head"));
        }
        let line = line.trim_end().to_owned();
        if line.is_empty() {
            return Ok(lines);
        }
        lines.push(line);
    }
}

fn header<'a>(head: &'a [String], name: &str) -> Option<&'a str> {
    head.iter().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

enum Action {
    Forward,
    Cut,
    Truncate,
}

fn handle(client: TcpStream, upstream: u16, shared: &Mutex<Shared>) -> std::io::Result<()> {
    let mut client_r = BufReader::new(client.try_clone()?);
    let mut client_w = client;
    let head = read_head(&mut client_r)?;
    let mut parts = head[0].split(' ');
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts
        .next()
        .unwrap_or("")
        .split('?')
        .next()
        .unwrap_or("")
        .to_owned();
    let blob = (method == "GET" && path.contains("/blobs/sha256:"))
        .then(|| path.rsplit('/').next().unwrap().to_owned());

    let (status, action, flip) = {
        let mut sh = shared.lock().unwrap();
        sh.stats.requests += 1;
        let plan = sh.plan.clone();
        let st = sh.paths.entry(format!("{method} {path}")).or_default();
        st.requests += 1;
        let status = plan.statuses.get(st.requests as usize - 1).copied();
        let mut action = Action::Forward;
        if status.is_none() && blob.is_some() {
            if st.cuts < plan.cuts_per_blob {
                st.cuts += 1;
                action = Action::Cut;
            } else if plan.always_truncate || st.truncations < plan.clean_truncations_per_blob {
                st.truncations += 1;
                action = Action::Truncate;
            }
        }
        let flip = blob.is_some() && blob == plan.flip;
        match (&status, &action) {
            (Some(_), _) => sh.stats.statuses += 1,
            (None, Action::Cut) => sh.stats.cuts += 1,
            (None, Action::Truncate) => sh.stats.truncations += 1,
            _ => {}
        }
        if flip {
            sh.stats.flips += 1;
        }
        (status, action, flip)
    };
    // Request body (pushes through the proxy).
    let body_len: u64 = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = Vec::new();
    (&mut client_r).take(body_len).read_to_end(&mut body)?;
    let cut_patch = {
        let mut sh = shared.lock().unwrap();
        if method == "PATCH" {
            sh.stats.patches += 1;
        }
        if method == "PUT" && path.contains("/blobs/uploads/") {
            sh.stats.final_puts += 1;
        }
        let cut = method == "PATCH" && sh.stats.patches_cut < sh.plan.cut_patches;
        if cut {
            sh.stats.patches_cut += 1;
        }
        cut
    };

    if let (Some(port), Some(_)) = (shared.lock().unwrap().plan.redirect_blobs_to, &blob) {
        let target = head[0].split(' ').nth(1).unwrap_or("");
        write!(
            client_w,
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{port}{target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return client_w.shutdown(Shutdown::Both);
    }
    if let Some(code) = status {
        let reason = if code == 429 {
            "Too Many Requests"
        } else {
            "Service Unavailable"
        };
        write!(
            client_w,
            "HTTP/1.1 {code} {reason}\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return client_w.shutdown(Shutdown::Both);
    }

    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    let mut req = String::new();
    req.push_str(&head[0]);
    req.push_str("\r\n");
    for l in head.iter().skip(1) {
        if !l.to_ascii_lowercase().starts_with("connection:") {
            req.push_str(l);
            req.push_str("\r\n");
        }
    }
    req.push_str("Connection: close\r\n\r\n");
    up.write_all(req.as_bytes())?;
    if cut_patch {
        up.write_all(&body[..body.len() / 2])?;
        up.flush()?;
        std::thread::sleep(Duration::from_millis(100));
        let _ = up.shutdown(Shutdown::Both);
        return client_w.shutdown(Shutdown::Both);
    }
    up.write_all(&body)?;
    let mut up_r = BufReader::new(up);
    let resp_head = read_head(&mut up_r)?;
    let ok = resp_head[0].contains(" 200 ") || resp_head[0].contains(" 206 ");
    let len: Option<u64> = header(&resp_head, "content-length").and_then(|v| v.parse().ok());
    let (send_len, close_at) = match (ok && blob.is_some(), len, action) {
        (true, Some(l), Action::Cut) => (l, Some(l / 2)),
        (true, Some(l), Action::Truncate) => (l / 2, Some(l / 2)),
        (_, l, _) => (l.unwrap_or(u64::MAX), None),
    };
    let mut out = String::new();
    out.push_str(&resp_head[0]);
    out.push_str("\r\n");
    for l in resp_head.iter().skip(1) {
        if l.to_ascii_lowercase().starts_with("content-length:") {
            out.push_str(&format!("Content-Length: {send_len}\r\n"));
        } else {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    out.push_str("\r\n");
    client_w.write_all(out.as_bytes())?;
    let limit = close_at.unwrap_or(u64::MAX);
    let mut sent = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let flip_at = len.map(|l| l / 3);
    while sent < limit {
        let want = (buf.len() as u64).min(limit - sent) as usize;
        let n = up_r.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        if let Some(at) = flip_at.filter(|at| flip && ok && *at >= sent && *at < sent + n as u64) {
            buf[(at - sent) as usize] ^= 0x01;
        }
        client_w.write_all(&buf[..n])?;
        sent += n as u64;
    }
    client_w.flush()?;
    client_w.shutdown(Shutdown::Both)
}

/// A token server for distribution's token auth: ES256 JWTs signed with a key whose
/// self-signed certificate (made with the openssl CLI) the registry trusts via x5c.
pub struct TokenServer {
    pub port: u16,
    pub cert: PathBuf,
    pub issued: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

pub const TOKEN_SERVICE: &str = "kiln-test-registry";
pub const TOKEN_ISSUER: &str = "kiln-test-issuer";

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl CLI");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl TokenServer {
    /// Starts a token server accepting `user:password` (Basic) and issuing tokens valid for
    /// `ttl_secs` from now (the registry adds 60 s of leeway: pass a negative offset to make
    /// short-lived tokens).
    pub fn start(user: &str, password: &str, exp_offset_secs: i64) -> Self {
        use base64::Engine as _;
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n).display().to_string();
        openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &p("key.pem"),
        ]);
        openssl(&[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            &p("key.pem"),
            "-outform",
            "DER",
            "-out",
            &p("key.p8"),
        ]);
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            &p("key.pem"),
            "-subj",
            "/CN=kiln-test-token",
            "-days",
            "2",
            "-out",
            &p("cert.pem"),
        ]);
        openssl(&[
            "x509",
            "-in",
            &p("cert.pem"),
            "-outform",
            "DER",
            "-out",
            &p("cert.der"),
        ]);
        let pkcs8 = std::fs::read(p("key.p8")).unwrap();
        let cert_der = std::fs::read(p("cert.der")).unwrap();
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &pkcs8,
            &rng,
        )
        .unwrap();
        let x5c = base64::engine::general_purpose::STANDARD.encode(&cert_der);
        let expected_auth = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let issued = Arc::new(Mutex::new(Vec::new()));
        let (s, iss) = (stop.clone(), issued.clone());
        let thread = std::thread::spawn(move || {
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let mut jti = 0u64;
            while !s.load(Ordering::Relaxed) {
                let Ok((conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                conn.set_nonblocking(false).unwrap();
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut w = conn;
                let Ok(head) = read_head(&mut r) else {
                    continue;
                };
                let target = head[0].split(' ').nth(1).unwrap_or("").to_owned();
                let query = target.split_once('?').map(|x| x.1).unwrap_or("");
                let params: HashMap<String, String> = query
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), percent_decode(v)))
                    .collect();
                if header(&head, "authorization") != Some(expected_auth.as_str()) {
                    let _ = w.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    continue;
                }
                let mut access = Vec::new();
                if let Some(scope) = params.get("scope") {
                    let mut parts = scope.splitn(3, ':');
                    if let (Some(t), Some(name), Some(actions)) =
                        (parts.next(), parts.next(), parts.next())
                    {
                        access.push(serde_json::json!({"type": t, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}));
                    }
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as i64;
                jti += 1;
                let header_json = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [x5c]});
                let claims = serde_json::json!({
                    "iss": TOKEN_ISSUER, "sub": "kiln", "aud": params.get("service").cloned().unwrap_or_default(),
                    "exp": now + exp_offset_secs, "nbf": now - 120, "iat": now - 120, "jti": jti.to_string(), "access": access,
                });
                let signing_input = format!(
                    "{}.{}",
                    b64.encode(header_json.to_string()),
                    b64.encode(claims.to_string())
                );
                let sig = key.sign(&rng, signing_input.as_bytes()).unwrap();
                let token = format!("{signing_input}.{}", b64.encode(sig.as_ref()));
                iss.lock()
                    .unwrap()
                    .push(params.get("scope").cloned().unwrap_or_default());
                let body = serde_json::json!({"token": token, "expires_in": 60}).to_string();
                let _ = write!(
                    w,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self {
            port,
            cert: dir.path().join("cert.pem"),
            issued,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }

    pub fn auth(&self) -> Auth {
        Auth::Token {
            realm: format!("http://127.0.0.1:{}/token", self.port),
            service: TOKEN_SERVICE.into(),
            issuer: TOKEN_ISSUER.into(),
            cert: self.cert.clone(),
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A small HTTP proxy on 127.0.0.1: `CONNECT host:port` tunnels (HTTPS registries) and
/// absolute-form requests (`GET http://host:port/path`, plain-HTTP registries), optionally
/// requiring `Proxy-Authorization: Basic`. Counts what it carried.
pub struct HttpProxy {
    pub port: u16,
    pub tunnels: Arc<Mutex<Vec<String>>>,
    pub forwards: Arc<Mutex<Vec<String>>>,
    pub refused: Arc<Mutex<u32>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn pipe_both(a: TcpStream, b: TcpStream) {
    let (mut a_r, mut b_w) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    let t = std::thread::spawn(move || {
        let _ = std::io::copy(&mut a_r, &mut b_w);
        let _ = b_w.shutdown(Shutdown::Write);
    });
    let (mut b_r, mut a_w) = (b, a);
    let _ = std::io::copy(&mut b_r, &mut a_w);
    let _ = a_w.shutdown(Shutdown::Write);
    let _ = t.join();
}

impl HttpProxy {
    /// `auth`: `Some((user, password))` to require Basic proxy credentials.
    pub fn start(auth: Option<(&str, &str)>) -> Self {
        use base64::Engine as _;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let tunnels = Arc::new(Mutex::new(Vec::new()));
        let forwards = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(0));
        let expected = auth.map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        let (s, tu, fw, rf) = (
            stop.clone(),
            tunnels.clone(),
            forwards.clone(),
            refused.clone(),
        );
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok((conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                conn.set_nonblocking(false).unwrap();
                let (tu, fw, rf, expected) = (tu.clone(), fw.clone(), rf.clone(), expected.clone());
                std::thread::spawn(move || {
                    let mut r = BufReader::new(conn.try_clone().unwrap());
                    let mut w = conn;
                    let Ok(head) = read_head(&mut r) else { return };
                    let mut parts = head[0].split(' ');
                    let (method, target) = (
                        parts.next().unwrap_or("").to_owned(),
                        parts.next().unwrap_or("").to_owned(),
                    );
                    // The scheme is case-insensitive (ureq sends `basic`).
                    let given = header(&head, "proxy-authorization")
                        .and_then(|v| v.split_once(' '))
                        .map(|(_, token)| format!("Basic {}", token.trim()));
                    let given_ok = header(&head, "proxy-authorization")
                        .and_then(|v| v.split_once(' '))
                        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"));
                    if expected.is_some() && (!given_ok || given != expected) {
                        *rf.lock().unwrap() += 1;
                        let _ = w.write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"kiln-test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                        return;
                    }
                    if method == "CONNECT" {
                        let Ok(up) = TcpStream::connect(target.as_str()) else {
                            let _ = w.write_all(
                                b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n",
                            );
                            return;
                        };
                        tu.lock().unwrap().push(target);
                        let _ = w.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
                        // Bytes the client sent after the head are in `r`'s buffer.
                        let buffered = r.buffer().to_vec();
                        let mut up_w = up.try_clone().unwrap();
                        let _ = up_w.write_all(&buffered);
                        pipe_both(w, up);
                        return;
                    }
                    // Absolute form: http://host:port/path → origin form to host:port.
                    let Some(rest) = target.strip_prefix("http://") else {
                        let _ =
                            w.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
                        return;
                    };
                    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                    let Ok(mut up) = TcpStream::connect(authority) else {
                        let _ =
                            w.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
                        return;
                    };
                    fw.lock().unwrap().push(format!("{method} {target}"));
                    let mut req = format!(
                        "{method} {} HTTP/1.1\r\n",
                        if path.is_empty() { "/" } else { path }
                    );
                    for l in head.iter().skip(1) {
                        let lower = l.to_ascii_lowercase();
                        if !lower.starts_with("proxy-") && !lower.starts_with("connection:") {
                            req.push_str(l);
                            req.push_str("\r\n");
                        }
                    }
                    req.push_str("Connection: close\r\n\r\n");
                    let buffered = r.buffer().to_vec();
                    if up.write_all(req.as_bytes()).is_err() || up.write_all(&buffered).is_err() {
                        return;
                    }
                    // One request per connection: the rest of the body, then the response.
                    pipe_both(w, up);
                });
            }
        });
        Self {
            port,
            tunnels,
            forwards,
            refused,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self, auth: Option<(&str, &str)>) -> String {
        match auth {
            Some((u, p)) => format!("http://{u}:{p}@127.0.0.1:{}", self.port),
            None => format!("http://127.0.0.1:{}", self.port),
        }
    }
}

impl Drop for HttpProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
