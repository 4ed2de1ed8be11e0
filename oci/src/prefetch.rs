//! Download-ahead: a thread reads a stream (the next layer) into a bounded queue of chunks
//! while the consumer is still busy with the current one. Memory is bounded by
//! `chunks * chunk_size` plus the chunk in the consumer's hands. Errors — including the blob's
//! digest verdict — are delivered in order, and a dead reader thread is an error, never EOF.

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

enum Msg {
    Data(Vec<u8>),
    End,
    Err(io::Error),
}

/// A `Read` fed by a background thread.
pub struct Prefetched {
    rx: Receiver<Msg>,
    cur: Vec<u8>,
    pos: usize,
    ended: bool,
    thread: Option<JoinHandle<()>>,
}

/// Starts reading `source` on a thread, up to `chunks` chunks of `chunk_size` bytes ahead.
pub fn prefetch<R: Read + Send + 'static>(
    source: R,
    chunk_size: usize,
    chunks: usize,
) -> Prefetched {
    let (tx, rx) = sync_channel(chunks.max(1));
    let thread = std::thread::Builder::new()
        .name("kiln-prefetch".into())
        .spawn(move || pump(source, tx, chunk_size.max(4096)))
        .expect("spawning the prefetch thread");
    Prefetched {
        rx,
        cur: Vec::new(),
        pos: 0,
        ended: false,
        thread: Some(thread),
    }
}

fn pump<R: Read>(mut source: R, tx: SyncSender<Msg>, chunk_size: usize) {
    loop {
        let mut buf = vec![0u8; chunk_size];
        let mut got = 0;
        let msg = loop {
            match source.read(&mut buf[got..]) {
                Ok(0) => break None,
                Ok(n) => {
                    got += n;
                    if got == buf.len() {
                        break None;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Some(e),
            }
        };
        let at_end = got < buf.len();
        if got > 0 {
            buf.truncate(got);
            if tx.send(Msg::Data(buf)).is_err() {
                return; // consumer gone
            }
        }
        if let Some(e) = msg {
            let _ = tx.send(Msg::Err(e));
            return;
        }
        if at_end {
            let _ = tx.send(Msg::End);
            return;
        }
    }
}

impl Read for Prefetched {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Msg::Data(d)) => {
                    self.cur = d;
                    self.pos = 0;
                }
                Ok(Msg::End) => {
                    self.ended = true;
                    return Ok(0);
                }
                Ok(Msg::Err(e)) => return Err(e),
                Err(_) => {
                    return Err(io::Error::other(
                        "the prefetch thread stopped before the end of the stream",
                    ));
                }
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for Prefetched {
    fn drop(&mut self) {
        // Unblock the thread (its send fails once rx is gone) and reap it.
        let (_, dead) = sync_channel(0);
        drop(std::mem::replace(&mut self.rx, dead));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn passes_bytes_and_end() {
        let data: Vec<u8> = (0..1_000_003u32).map(|i| i as u8).collect();
        let mut out = Vec::new();
        prefetch(io::Cursor::new(data.clone()), 65536, 4)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn error_after_data_is_delivered_in_order() {
        let src = io::Cursor::new(vec![1u8; 100]).chain(FailingReader);
        let mut p = prefetch(src, 4096, 2);
        let mut out = Vec::new();
        let err = p.read_to_end(&mut out).unwrap_err();
        assert_eq!(out.len(), 100);
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    struct FailingReader;
    impl Read for FailingReader {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "digest mismatch",
            ))
        }
    }

    struct Counting(Arc<AtomicUsize>);
    impl Read for Counting {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.fetch_add(buf.len(), Ordering::SeqCst);
            buf.fill(0);
            Ok(buf.len())
        }
    }

    #[test]
    fn read_ahead_is_bounded() {
        let count = Arc::new(AtomicUsize::new(0));
        let p = prefetch(Counting(count.clone()), 4096, 3);
        std::thread::sleep(std::time::Duration::from_millis(200));
        // 3 queued + 1 blocked in send.
        assert!(
            count.load(Ordering::SeqCst) <= 4 * 4096,
            "{}",
            count.load(Ordering::SeqCst)
        );
        drop(p); // must not hang
    }

    #[test]
    fn panicking_source_is_an_error_not_eof() {
        struct Panics;
        impl Read for Panics {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                panic!("source panicked")
            }
        }
        let err = prefetch(Panics, 4096, 2)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(err.to_string().contains("prefetch thread stopped"), "{err}");
    }
}
