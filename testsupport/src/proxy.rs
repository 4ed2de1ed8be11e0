//! A fault-injecting HTTP/1.1 proxy in front of a registry: cut or truncated blob bodies,
//! error statuses, flipped bytes, redirects to blob storage, cut upload PATCHes; it counts
//! what it did.

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::http::{header, read_head};

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

/// What the proxy did, counted.
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
