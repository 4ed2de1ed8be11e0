//! The verified, resumable blob stream — the contract the provisioning engine builds on:
//!
//! - [`BlobReader`] is `Read + Send`; it yields the blob's bytes as they arrive (bounded
//!   memory: one HTTP body buffer), hashing them.
//! - At the end of the stream it returns `Ok(0)` only if the length and sha256 match the
//!   descriptor; otherwise an `io::Error` of kind `InvalidData` whose message names the
//!   reference, the expected digest and the digest seen. More bytes than the descriptor's size
//!   fail at once. A consumer that read to `Ok(0)` therefore has a verified stream.
//! - A cut connection (I/O error, early EOF, read timeout) is resumed with
//!   `Range: bytes=N-` from the last byte received; the hash continues across the resume. A
//!   server that ignores the range (200) is read from the start and the first N bytes are
//!   skipped. Mirrors that fail are left for the next endpoint.
//! - Progress: a shared [`Progress`] counter and optional [`BlobEvent`] callback.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::digest::{Digest, Hasher};
use crate::progress::{BlobEvent, Progress, ProgressCallback};
use crate::reference::Reference;
use crate::registry::{Body, Client, Endpoint};

type HttpBody = Box<dyn Read + Send + Sync>;

/// Blobs at least this large are hashed on a separate thread, overlapping sha256 with the
/// network reads and with the consumer's work.
const THREADED_HASH_MIN: u64 = 4 << 20;
/// Chunks queued for the hashing thread (bounded memory: chunks are at most one read).
const HASH_QUEUE: usize = 16;

/// Where received bytes are hashed: inline, or on a thread fed through a bounded queue.
enum HashSink {
    Inline(Hasher),
    Thread {
        tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
        thread: Option<std::thread::JoinHandle<Hasher>>,
        len: u64,
    },
}

impl HashSink {
    fn new(size: u64) -> Self {
        if size < THREADED_HASH_MIN {
            return Self::Inline(Hasher::default());
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(HASH_QUEUE);
        let spawned = std::thread::Builder::new()
            .name("kiln-sha256".into())
            .spawn(move || {
                let mut h = Hasher::default();
                for chunk in rx {
                    h.update(&chunk);
                }
                h
            });
        match spawned {
            Ok(thread) => Self::Thread {
                tx: Some(tx),
                thread: Some(thread),
                len: 0,
            },
            Err(_) => Self::Inline(Hasher::default()),
        }
    }

    fn update(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Self::Inline(h) => h.update(bytes),
            Self::Thread { tx, len, .. } => {
                let sent = tx
                    .as_ref()
                    .is_some_and(|tx| tx.send(bytes.to_vec()).is_ok());
                if !sent {
                    return Err(io::Error::other("the sha256 thread stopped"));
                }
                *len += bytes.len() as u64;
            }
        }
        Ok(())
    }

    fn len(&self) -> u64 {
        match self {
            Self::Inline(h) => h.len(),
            Self::Thread { len, .. } => *len,
        }
    }

    /// The digest of everything received; waits for the hashing thread to finish.
    fn digest(&mut self) -> io::Result<Digest> {
        match self {
            Self::Inline(h) => Ok(h.digest()),
            Self::Thread { tx, thread, len } => {
                drop(tx.take());
                let h = thread
                    .take()
                    .ok_or_else(|| io::Error::other("sha256 already finished"))?
                    .join()
                    .map_err(|_| io::Error::other("the sha256 thread panicked"))?;
                if h.len() != *len {
                    return Err(io::Error::other("the sha256 thread lost bytes"));
                }
                let d = h.digest();
                *self = Self::Inline(h);
                Ok(d)
            }
        }
    }
}

/// A blob being downloaded and verified. See the module docs for the contract.
pub struct BlobReader {
    client: Client,
    reference: Reference,
    digest: Digest,
    size: u64,
    endpoints: Vec<Endpoint>,
    endpoint: usize,
    body: Option<HttpBody>,
    hasher: HashSink,
    cuts_without_progress: u32,
    progress: Progress,
    callback: Option<ProgressCallback>,
    last_event: Instant,
    state: State,
}

enum State {
    Streaming,
    Verified,
    Failed(io::ErrorKind, String),
}

impl std::fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobReader")
            .field("reference", &self.reference.to_string())
            .field("digest", &self.digest.as_str())
            .field("size", &self.size)
            .field("received", &self.hasher.len())
            .finish_non_exhaustive()
    }
}

impl BlobReader {
    pub(crate) fn open(
        client: Client,
        reference: Reference,
        digest: Digest,
        size: u64,
    ) -> Result<Self> {
        let endpoints = client.endpoints(&reference);
        let mut r = Self {
            client,
            reference,
            digest,
            size,
            endpoints,
            endpoint: 0,
            body: None,
            hasher: HashSink::new(size),
            cuts_without_progress: 0,
            progress: Progress::new(size),
            callback: None,
            last_event: Instant::now(),
            state: State::Streaming,
        };
        r.connect()?;
        Ok(r)
    }

    /// The digest this stream is verified against.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The expected size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The shared progress counter (clone it to poll from another thread).
    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    /// Calls `cb` with progress (at most every 250 ms), resumes and the final verdict.
    pub fn on_event(mut self, cb: impl FnMut(&BlobEvent) + Send + 'static) -> Self {
        self.callback = Some(Box::new(cb));
        self
    }

    fn emit(&mut self, e: BlobEvent) {
        if let Some(cb) = &mut self.callback {
            cb(&e);
        }
    }

    fn what(&self) -> String {
        format!("blob {} of {}", self.digest, self.reference)
    }

    /// (Re)opens the HTTP body at the current offset, trying the endpoints in order.
    fn connect(&mut self) -> Result<()> {
        let offset = self.hasher.len();
        let path = format!("/v2/{}/blobs/{}", self.reference.repository(), self.digest);
        let scope = format!("repository:{}:pull", self.reference.repository());
        let range = format!("bytes={offset}-");
        let mut errors = Vec::new();
        while self.endpoint < self.endpoints.len() {
            let ep = self.endpoints[self.endpoint].clone();
            let headers: &[(&str, &str)] = if offset > 0 {
                &[("Range", &range)]
            } else {
                &[]
            };
            match self.client.send(
                &ep,
                &scope,
                "GET",
                &ep.url(&path),
                headers,
                Body::Empty,
                &[],
            ) {
                Ok(resp) => {
                    let status = resp.status();
                    if status == 206 {
                        let start = resp
                            .header("content-range")
                            .and_then(|v| v.trim().strip_prefix("bytes "))
                            .and_then(|v| v.split('-').next())
                            .and_then(|v| v.trim().parse::<u64>().ok());
                        if start != Some(offset) {
                            bail!(
                                "{}: asked to resume at byte {offset}, the registry answered Content-Range {:?}",
                                self.what(),
                                resp.header("content-range")
                            );
                        }
                    }
                    let mut body: HttpBody = resp.into_reader();
                    if offset > 0 && status == 200 {
                        // Range ignored: skip what we already hashed.
                        let skipped = io::copy(&mut (&mut body).take(offset), &mut io::sink())
                            .with_context(|| {
                                format!("{}: skipping {offset} bytes already received", self.what())
                            })?;
                        if skipped != offset {
                            bail!(
                                "{}: the registry sent {skipped} bytes, fewer than the {offset} already received",
                                self.what()
                            );
                        }
                    } else if offset > 0 && status != 206 {
                        bail!(
                            "{}: resume at byte {offset}: unexpected HTTP {status}",
                            self.what()
                        );
                    }
                    self.body = Some(body);
                    return Ok(());
                }
                Err(e) => {
                    errors.push(format!("{}: {e:#}", ep.host));
                    self.endpoint += 1;
                }
            }
        }
        bail!(
            "fetching {} (at byte {offset}): {}",
            self.what(),
            errors.join("; ")
        )
    }

    fn fail(&mut self, kind: io::ErrorKind, msg: String) -> io::Error {
        self.state = State::Failed(kind, msg.clone());
        self.body = None;
        io::Error::new(kind, msg)
    }

    /// The body was cut at the current offset: reconnect with a range request.
    fn resume(&mut self, reason: String) -> io::Result<()> {
        self.body = None;
        self.cuts_without_progress += 1;
        let at = self.hasher.len();
        if self.cuts_without_progress > self.client.config().retry.max_resumes_without_progress {
            let msg = format!(
                "{}: incomplete after {} resumes without progress: expected {} ({} bytes), seen {at} bytes only; last error: {reason}",
                self.what(),
                self.cuts_without_progress - 1,
                self.digest,
                self.size
            );
            return Err(self.fail(io::ErrorKind::UnexpectedEof, msg));
        }
        self.progress.resumed();
        let digest = self.digest.to_string();
        self.emit(BlobEvent::Resuming { digest, at, reason });
        if self.cuts_without_progress > 1 {
            std::thread::sleep(crate::registry::backoff(
                &self.client.config().retry,
                self.cuts_without_progress - 1,
                None,
            ));
        }
        // A mirror that cuts keeps its turn: the resume goes to the same endpoint first.
        if let Err(e) = self.connect() {
            let msg = format!(
                "{e:#}; expected {}, seen {at} of {} bytes",
                self.digest, self.size
            );
            return Err(self.fail(io::ErrorKind::UnexpectedEof, msg));
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<usize> {
        let seen = match self.hasher.digest() {
            Ok(d) => d,
            Err(e) => return Err(self.fail(io::ErrorKind::Other, format!("{}: {e}", self.what()))),
        };
        if seen != self.digest {
            let msg = format!(
                "{}: digest mismatch: expected {}, seen {seen} ({} bytes)",
                self.what(),
                self.digest,
                self.hasher.len()
            );
            return Err(self.fail(io::ErrorKind::InvalidData, msg));
        }
        self.state = State::Verified;
        self.body = None;
        let (digest, bytes) = (self.digest.to_string(), self.size);
        self.emit(BlobEvent::Progress {
            digest: digest.clone(),
            progress: self.progress.snapshot(),
        });
        self.emit(BlobEvent::Verified { digest, bytes });
        Ok(0)
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.state {
            State::Verified => return Ok(0),
            State::Failed(kind, msg) => return Err(io::Error::new(*kind, msg.clone())),
            State::Streaming => {}
        }
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let remaining = self.size - self.hasher.len();
            let Some(body) = self.body.as_mut() else {
                self.resume("no connection".into())?;
                continue;
            };
            // Ask for one byte more than expected, so an overlong body is caught.
            let want = buf
                .len()
                .min(usize::try_from(remaining.saturating_add(1)).unwrap_or(usize::MAX));
            match body.read(&mut buf[..want]) {
                Ok(0) if remaining == 0 => return self.finish(),
                Ok(0) => self.resume(format!(
                    "connection closed after byte {}",
                    self.hasher.len()
                ))?,
                Ok(n) if n as u64 > remaining => {
                    let msg = format!(
                        "{}: the registry sent more than the {} bytes of the descriptor: expected {}, seen an overlong body",
                        self.what(),
                        self.size,
                        self.digest
                    );
                    return Err(self.fail(io::ErrorKind::InvalidData, msg));
                }
                Ok(n) => {
                    if let Err(e) = self.hasher.update(&buf[..n]) {
                        return Err(
                            self.fail(io::ErrorKind::Other, format!("{}: {e}", self.what()))
                        );
                    }
                    self.progress.add(n as u64);
                    self.cuts_without_progress = 0;
                    if self.callback.is_some()
                        && self.last_event.elapsed() >= Duration::from_millis(250)
                    {
                        self.last_event = Instant::now();
                        let digest = self.digest.to_string();
                        self.emit(BlobEvent::Progress {
                            digest,
                            progress: self.progress.snapshot(),
                        });
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.resume(e.to_string())?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// The streaming contract's shape, checked at compile time.
    #[test]
    fn blob_stream_is_read_send_static() {
        fn contract<T: std::io::Read + Send + 'static>() {}
        contract::<super::BlobReader>();
        contract::<crate::prefetch::Prefetched>();
        contract::<crate::compression::Decompressor<super::BlobReader>>();
    }
}
