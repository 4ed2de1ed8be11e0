//! The forward-only converter: reads the file cluster by cluster, keeps a map of the host ranges
//! the tables read so far asked for ("wants"), serves each want when the stream reaches it (or
//! from the held bytes when its table came after it), and holds bytes nobody asked for yet while
//! some L2 table is still to come.

use std::collections::BTreeMap;
use std::io::{self, BufReader, Read};

use super::cluster::{self, Mapping};
use super::header::{self, Header};
use super::pending::Pending;
use super::{Event, Options, Qcow2Error, Report};

/// What a wanted host range is.
#[derive(Clone, Copy, Debug)]
enum Kind {
    L1,
    L2 { guest: u64 },
    Reftable,
    Skip,
    Data { guest: u64 },
    Compressed { guest: u64 },
}

#[derive(Clone, Copy, Debug)]
struct Want {
    start: u64,
    len: u64,
    kind: Kind,
}

impl Want {
    fn end(&self) -> u64 {
        self.start + self.len
    }

    fn what(&self) -> &'static str {
        match self.kind {
            Kind::L1 => "L1 table",
            Kind::L2 { .. } => "L2 table",
            Kind::Reftable => "refcount table",
            Kind::Skip => "refcount block",
            Kind::Data { .. } => "data cluster",
            Kind::Compressed { .. } => "compressed cluster",
        }
    }

    /// The part no other cluster can share: a compressed cluster's last sector may hold the start
    /// of the next compressed cluster, so it is not "covered".
    fn exclusive_end(&self) -> u64 {
        match self.kind {
            Kind::Compressed { .. } => self.end().saturating_sub(512).max(self.start),
            _ => self.end(),
        }
    }
}

/// Budget charge for each want not served yet.
const WANT_COST: usize = 64;

pub struct Converter<F> {
    h: Header,
    opts: Options,
    on_event: F,
    pos: u64,
    wants: BTreeMap<u64, Vec<Want>>,
    want_count: usize,
    active: Vec<(Want, Vec<u8>)>,
    active_bytes: usize,
    pending: Pending,
    l1_done: bool,
    l2_outstanding: usize,
    report: Report,
}

impl<F: FnMut(Event<'_>) -> io::Result<()>> Converter<F> {
    pub fn run<R: Read>(input: R, opts: &Options, mut on_event: F) -> Result<Report, Qcow2Error> {
        let mut input = BufReader::with_capacity(1 << 20, input);
        let mut first = vec![0; 72];
        read_full(&mut input, &mut first)?;
        let cs = 1usize << header::cluster_bits(&first)?;
        first.resize(cs, 0);
        let got = 72 + read_full(&mut input, &mut first[72..])?;
        first.truncate(got);
        let h = header::parse(&first)?;
        on_event(Event::Header(&h)).map_err(Qcow2Error::Sink)?;
        let report = Report {
            virtual_size: h.virtual_size,
            version: h.version,
            cluster_size: h.cluster_size(),
            ..Report::default()
        };
        let mut c = Converter {
            h,
            opts: opts.clone(),
            on_event,
            pos: got as u64,
            wants: BTreeMap::new(),
            want_count: 0,
            active: Vec::new(),
            active_bytes: 0,
            pending: Pending::default(),
            l1_done: false,
            l2_outstanding: 0,
            report,
        };
        c.start()?;
        c.stream(&mut input, cs)?;
        c.finish()
    }

    fn start(&mut self) -> Result<(), Qcow2Error> {
        let h = self.h.clone();
        if h.refcount_table_clusters > 0 {
            self.want(Want {
                start: h.refcount_table_offset,
                len: h.refcount_table_clusters as u64 * h.cluster_size(),
                kind: Kind::Reftable,
            })?;
        }
        if h.l1_needed() == 0 {
            self.l1_done = true;
            return Ok(());
        }
        self.want(Want {
            start: h.l1_table_offset,
            len: h.l1_size as u64 * 8,
            kind: Kind::L1,
        })
    }

    fn stream<R: Read>(&mut self, input: &mut R, cs: usize) -> Result<(), Qcow2Error> {
        let mut chunk = vec![0; cs];
        loop {
            if self.all_tables_read() && self.wants.is_empty() && self.active.is_empty() {
                self.report.file_bytes =
                    self.pos + io::copy(input, &mut io::sink()).map_err(Qcow2Error::Read)?;
                return Ok(());
            }
            let n = read_full(input, &mut chunk)?;
            if n == 0 {
                self.report.file_bytes = self.pos;
                return Ok(());
            }
            self.chunk(&chunk[..n])?;
        }
    }

    fn all_tables_read(&self) -> bool {
        self.l1_done && self.l2_outstanding == 0
    }

    /// One chunk of the file at `self.pos`.
    fn chunk(&mut self, bytes: &[u8]) -> Result<(), Qcow2Error> {
        let a = self.pos;
        let b = a + bytes.len() as u64;
        let mut here: Vec<(Want, Vec<u8>)> = std::mem::take(&mut self.active);
        self.active_bytes = 0;
        let starting: Vec<u64> = self.wants.range(a..b).map(|(k, _)| *k).collect();
        for k in starting {
            for w in self.wants.remove(&k).expect("key listed") {
                self.want_count -= 1;
                here.push((w, Vec::new()));
            }
        }
        self.pos = b;
        if !self.all_tables_read() {
            self.hold_uncovered(a, bytes, &here)?;
        }
        for (w, mut buf) in here {
            let from = w.start.max(a);
            let to = w.end().min(b);
            if buf.is_empty() && w.start >= a && w.end() <= b {
                self.complete(w, &bytes[(from - a) as usize..(to - a) as usize])?;
                continue;
            }
            buf.extend_from_slice(&bytes[(from - a) as usize..(to - a) as usize]);
            if w.end() <= b {
                self.complete(w, &buf)?;
            } else {
                self.activate(w, buf)?;
            }
        }
        Ok(())
    }

    /// Holds the bytes of `[a, a + bytes.len())` no want in `here` covers.
    fn hold_uncovered(
        &mut self,
        a: u64,
        bytes: &[u8],
        here: &[(Want, Vec<u8>)],
    ) -> Result<(), Qcow2Error> {
        let mut covered: Vec<(u64, u64)> = here
            .iter()
            .map(|(w, _)| (w.start, w.exclusive_end()))
            .collect();
        covered.sort_unstable();
        let b = a + bytes.len() as u64;
        let mut at = a;
        for (s, e) in covered.into_iter().chain([(b, b)]) {
            if s > at {
                let end = s.min(b);
                self.charge(end - at, at)?;
                self.pending
                    .insert(at, &bytes[(at - a) as usize..(end - a) as usize]);
            }
            at = at.max(e);
            if at >= b {
                break;
            }
        }
        self.report.peak_unplaced_bytes = self.report.peak_unplaced_bytes.max(self.pending.bytes());
        Ok(())
    }

    /// Checks that `extra` more bytes fit the budget.
    fn charge(&mut self, extra: u64, offset: u64) -> Result<(), Qcow2Error> {
        let used = self.pending.bytes() + self.active_bytes + self.want_count * WANT_COST;
        let needed = used.saturating_add(usize::try_from(extra).unwrap_or(usize::MAX));
        if needed > self.opts.budget {
            return Err(Qcow2Error::BufferExceeded {
                budget: self.opts.budget,
                needed,
                offset,
            });
        }
        self.report.peak_budget_bytes = self.report.peak_budget_bytes.max(needed);
        Ok(())
    }

    fn activate(&mut self, w: Want, buf: Vec<u8>) -> Result<(), Qcow2Error> {
        self.charge(w.len, w.start)?;
        self.active_bytes += w.len as usize;
        self.active.push((w, buf));
        Ok(())
    }

    /// Registers a range a table asked for: served later by the stream, or now from held bytes.
    fn want(&mut self, w: Want) -> Result<(), Qcow2Error> {
        if w.start < self.h.cluster_size() {
            return Err(Qcow2Error::Invalid {
                field: w.what(),
                detail: format!("host offset {:#x} is inside the header cluster", w.start),
            });
        }
        if w.start >= self.pos {
            self.charge(WANT_COST as u64, w.start)?;
            self.want_count += 1;
            self.wants.entry(w.start).or_default().push(w);
            return Ok(());
        }
        let upto = w.end().min(self.pos);
        if let Kind::Skip = w.kind {
            // A refcount block already passed: nothing to read from it.
            self.pending.remove(w.start, upto);
            return Ok(());
        }
        let Some(buf) = self.pending.read(w.start, upto - w.start) else {
            return Err(Qcow2Error::Overlap {
                what: w.what(),
                offset: w.start,
            });
        };
        self.pending.remove(w.start, w.exclusive_end().min(upto));
        if w.end() <= self.pos {
            self.complete(w, &buf)
        } else {
            self.activate(w, buf)
        }
    }

    /// A want's bytes are all here.
    fn complete(&mut self, w: Want, bytes: &[u8]) -> Result<(), Qcow2Error> {
        match w.kind {
            Kind::L1 => self.l1(bytes),
            Kind::L2 { guest } => {
                self.l2_outstanding -= 1;
                self.l2(guest, bytes)?;
                if self.all_tables_read() {
                    self.pending.clear();
                }
                Ok(())
            }
            Kind::Reftable => {
                let h = self.h.clone();
                for off in cluster::entries(bytes).filter_map(|e| cluster::reftable_entry(&h, e)) {
                    self.want(Want {
                        start: off,
                        len: self.h.cluster_size(),
                        kind: Kind::Skip,
                    })?;
                }
                Ok(())
            }
            Kind::Skip => Ok(()),
            Kind::Data { guest } => {
                self.report.data_clusters += 1;
                self.emit_data(guest, bytes)
            }
            Kind::Compressed { guest } => self.compressed(w.start, guest, bytes),
        }
    }

    fn l1(&mut self, table: &[u8]) -> Result<(), Qcow2Error> {
        self.l1_done = true;
        let span = self.h.l2_span();
        let needed = self.h.l1_needed() as usize;
        let mut l2s = Vec::new();
        for (i, e) in cluster::entries(table).take(needed).enumerate() {
            let guest = i as u64 * span;
            match cluster::l1_entry(&self.h, e)? {
                Some(off) => l2s.push(Want {
                    start: off,
                    len: self.h.cluster_size(),
                    kind: Kind::L2 { guest },
                }),
                None => self.emit_zero(guest, span)?,
            }
        }
        self.l2_outstanding = l2s.len();
        for w in l2s {
            self.want(w)?;
        }
        if self.all_tables_read() {
            self.pending.clear();
        }
        Ok(())
    }

    fn l2(&mut self, guest0: u64, table: &[u8]) -> Result<(), Qcow2Error> {
        let cs = self.h.cluster_size();
        let mut zero_run: Option<(u64, u64)> = None;
        for (i, e) in cluster::entries(table).enumerate() {
            let guest = guest0 + i as u64 * cs;
            if guest >= self.h.virtual_size {
                break;
            }
            let m = cluster::l2_entry(&self.h, e)?;
            if m == Mapping::Zero {
                zero_run = Some(zero_run.map_or((guest, cs), |(s, l)| (s, l + cs)));
                continue;
            }
            if let Some((s, l)) = zero_run.take() {
                self.emit_zero(s, l)?;
            }
            match m {
                Mapping::Data(off) => self.want(Want {
                    start: off,
                    len: cs,
                    kind: Kind::Data { guest },
                })?,
                Mapping::Compressed { offset, len } => self.want(Want {
                    start: offset,
                    len,
                    kind: Kind::Compressed { guest },
                })?,
                Mapping::Zero => unreachable!("handled above"),
            }
        }
        if let Some((s, l)) = zero_run {
            self.emit_zero(s, l)?;
        }
        Ok(())
    }

    fn compressed(&mut self, offset: u64, guest: u64, input: &[u8]) -> Result<(), Qcow2Error> {
        self.report.compressed_clusters += 1;
        let mut out = vec![0; self.h.cluster_size() as usize];
        cluster::decompress(self.h.compression, offset, input, &mut out)?;
        self.emit_data(guest, &out)
    }

    fn emit_data(&mut self, guest: u64, bytes: &[u8]) -> Result<(), Qcow2Error> {
        let len = (bytes.len() as u64).min(self.h.virtual_size.saturating_sub(guest)) as usize;
        if len == 0 {
            return Ok(());
        }
        (self.on_event)(Event::Data {
            offset: guest,
            bytes: &bytes[..len],
        })
        .map_err(Qcow2Error::Sink)
    }

    fn emit_zero(&mut self, guest: u64, len: u64) -> Result<(), Qcow2Error> {
        let len = len.min(self.h.virtual_size.saturating_sub(guest));
        if len == 0 {
            return Ok(());
        }
        (self.on_event)(Event::Zero { offset: guest, len }).map_err(Qcow2Error::Sink)
    }

    /// End of file: a compressed cluster may run past it (its length is rounded up); anything
    /// else still wanted is missing.
    fn finish(mut self) -> Result<Report, Qcow2Error> {
        for (w, buf) in std::mem::take(&mut self.active) {
            match w.kind {
                Kind::Compressed { .. } => self.complete(w, &buf)?,
                _ => return Err(self.truncated(w)),
            }
        }
        if let Some(w) = self.wants.values().flatten().next().copied() {
            return Err(self.truncated(w));
        }
        Ok(self.report)
    }

    fn truncated(&self, w: Want) -> Qcow2Error {
        Qcow2Error::Truncated {
            what: w.what(),
            offset: w.start,
            file_size: self.pos,
        }
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<usize, Qcow2Error> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Qcow2Error::Read(e)),
        }
    }
    Ok(n)
}
