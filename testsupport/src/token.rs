//! A token server for distribution's token auth, for registries that authenticate with
//! bearer tokens.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::http::{header, percent_decode, read_head};
use crate::pki::{ec_key, openssl};
use crate::registry::Auth;

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

impl TokenServer {
    /// Starts a token server accepting `user:password` (Basic) and issuing tokens valid for
    /// `ttl_secs` from now (the registry adds 60 s of leeway: pass a negative offset to make
    /// short-lived tokens).
    pub fn start(user: &str, password: &str, exp_offset_secs: i64) -> Self {
        use base64::Engine as _;
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n).display().to_string();
        ec_key(&p("key.pem"));
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
