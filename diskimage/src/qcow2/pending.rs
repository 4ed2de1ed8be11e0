//! Bytes of the qcow2 file already read whose role is not known yet: they may be a data cluster
//! (or part of a compressed one) whose L2 table comes later in the file. Kept as disjoint byte
//! ranges keyed by host offset; the converter counts them against its memory budget.

use std::collections::BTreeMap;

/// Disjoint host byte ranges held back until a table places them (or all tables are read).
#[derive(Default)]
pub struct Pending {
    ranges: BTreeMap<u64, Vec<u8>>,
    bytes: usize,
}

impl Pending {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Holds `data` at host offset `start` (the caller never inserts overlapping ranges).
    pub fn insert(&mut self, start: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.bytes += data.len();
        self.ranges.insert(start, data.to_vec());
    }

    /// Copies `[start, start + len)` if every byte of it is held.
    pub fn read(&self, start: u64, len: u64) -> Option<Vec<u8>> {
        let end = start.checked_add(len)?;
        let mut out = Vec::with_capacity(usize::try_from(len).ok()?);
        let mut at = start;
        let first = self.first_key(start);
        for (&k, v) in self.ranges.range(first..end) {
            let v_end = k + v.len() as u64;
            if v_end <= at {
                continue;
            }
            if k > at {
                return None;
            }
            let take_end = v_end.min(end);
            out.extend_from_slice(&v[(at - k) as usize..(take_end - k) as usize]);
            at = take_end;
            if at == end {
                return Some(out);
            }
        }
        (at == end).then_some(out)
    }

    /// Forgets `[start, end)`, splitting ranges that stick out on either side.
    pub fn remove(&mut self, start: u64, end: u64) {
        let first = self.first_key(start);
        let keys: Vec<u64> = self.ranges.range(first..end).map(|(k, _)| *k).collect();
        for k in keys {
            let v = self.ranges.remove(&k).expect("key listed");
            let v_end = k + v.len() as u64;
            self.bytes -= v.len();
            if k < start {
                let keep = &v[..(start.min(v_end) - k) as usize];
                self.insert(k, keep);
            }
            if v_end > end {
                let keep = &v[(end.max(k) - k) as usize..];
                self.insert(end.max(k), keep);
            }
        }
    }

    /// The key of the range holding `start`, or `start` (where a scan for it begins).
    fn first_key(&self, start: u64) -> u64 {
        self.ranges
            .range(..=start)
            .next_back()
            .map_or(start, |(k, _)| *k)
    }

    /// Forgets everything (every table has been read: nothing held can be placed any more).
    pub fn clear(&mut self) {
        self.ranges.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_and_remove_across_ranges() {
        let mut p = Pending::default();
        p.insert(100, &[1; 10]);
        p.insert(110, &[2; 10]);
        p.insert(130, &[3; 10]);
        let cases: &[(u64, u64, Option<Vec<u8>>)] = &[
            (105, 10, Some([vec![1; 5], vec![2; 5]].concat())),
            (100, 20, Some([vec![1; 10], vec![2; 10]].concat())),
            (115, 10, None),
            (99, 2, None),
            (135, 5, Some(vec![3; 5])),
            (135, 6, None),
        ];
        for (start, len, want) in cases {
            assert_eq!(&p.read(*start, *len), want, "read({start}, {len})");
        }
        p.remove(105, 135);
        assert_eq!(p.bytes(), 10);
        assert_eq!(p.read(100, 5), Some(vec![1; 5]));
        assert_eq!(p.read(135, 5), Some(vec![3; 5]));
        assert_eq!(p.read(105, 1), None);
    }
}
