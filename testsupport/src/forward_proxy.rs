//! An HTTP forward proxy on 127.0.0.1 (`CONNECT` tunnels and absolute-form requests),
//! for the registry client's proxy support.

use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::http::{header, pipe_both, read_head};

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
