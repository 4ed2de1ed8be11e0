//! Fixtures shared by the qcow2 tests: a generated raw disk and `qemu-img`.

#![allow(dead_code)]

use std::fs;
use std::path::Path;
use std::process::Command;

pub fn qemu_img_present() -> bool {
    Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("running qemu-img");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `qemu-img convert -O qcow2 ARGS raw out`.
pub fn to_qcow2(raw: &Path, out: &Path, args: &[&str]) {
    let mut a = vec!["convert", "-f", "raw", "-O", "qcow2"];
    a.extend_from_slice(args);
    a.extend([raw.to_str().unwrap(), out.to_str().unwrap()]);
    qemu_img(&a);
}

/// `qemu-img convert -O raw qcow2 out`: the reference output.
pub fn to_raw(qcow2: &Path, out: &Path) {
    qemu_img(&[
        "convert",
        "-f",
        "qcow2",
        "-O",
        "raw",
        qcow2.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
}

/// A raw disk of `size` bytes: 64 KiB runs of pseudo-random data, text, zeros and sparse
/// sectors, in an order that repeats every 7 runs (so every cluster size sees each kind).
pub fn fixture_raw(path: &Path, size: usize) {
    let mut disk = vec![0u8; size];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for (i, run) in disk.chunks_mut(64 << 10).enumerate() {
        match i % 7 {
            0 | 3 => run.iter_mut().for_each(|b| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }),
            1 | 5 => {
                let text = format!("run {i}: the quick brown fox jumps over the lazy dog\n");
                run.iter_mut()
                    .zip(text.bytes().cycle())
                    .for_each(|(b, t)| *b = t);
            }
            4 => run.iter_mut().step_by(4096).for_each(|b| *b = i as u8),
            _ => {}
        }
    }
    fs::write(path, disk).expect("writing the raw fixture");
}

/// A qcow2 v3 image built here (no qemu-img): 16 guest clusters of data, deflated text and
/// zeros, with its L1 and L2 tables either first or last in the file (`tables_last`: every
/// data cluster arrives before the table placing it). Returns (image, raw disk).
pub fn synthetic(cluster_bits: u32, tables_last: bool) -> (Vec<u8>, Vec<u8>) {
    use std::io::Write;
    let cs = 1usize << cluster_bits;
    let n = 16;
    let mut raw = vec![0u8; n * cs];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for (i, c) in raw.chunks_mut(cs).enumerate() {
        match i % 4 {
            0 | 3 => c.iter_mut().for_each(|b| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }),
            1 => c
                .iter_mut()
                .zip(format!("cluster {i} text ").bytes().cycle())
                .for_each(|(b, t)| *b = t),
            _ => {}
        }
    }
    let meta = 2 * cs; // L1 + L2
    let data_start = if tables_last { cs } else { cs + meta };
    let mut body = Vec::new();
    let mut l2 = vec![0u8; cs];
    let x = 62 - (cluster_bits - 8);
    for (i, c) in raw.chunks(cs).enumerate() {
        let host = (data_start + body.len()) as u64;
        let entry = match i % 4 {
            0 | 3 => {
                body.resize(body.len().div_ceil(cs) * cs, 0);
                let host = (data_start + body.len()) as u64;
                body.extend_from_slice(c);
                (1u64 << 63) | host
            }
            1 => {
                let mut enc =
                    flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
                enc.write_all(c).unwrap();
                let z = enc.finish().unwrap();
                body.extend_from_slice(&z);
                let sectors = ((host + z.len() as u64 - 1) >> 9) - (host >> 9);
                (1u64 << 62) | (sectors << x) | host
            }
            _ => 0,
        };
        l2[i * 8..i * 8 + 8].copy_from_slice(&entry.to_be_bytes());
    }
    body.resize(body.len().div_ceil(cs) * cs, 0);
    let l1_off = if tables_last { cs + body.len() } else { cs };
    let mut l1 = vec![0u8; cs];
    l1[..8].copy_from_slice(&((1u64 << 63) | (l1_off + cs) as u64).to_be_bytes());
    let mut header = vec![0u8; cs];
    let fields: &[(usize, u64, usize)] = &[
        (4, 3, 4),
        (20, cluster_bits as u64, 4),
        (24, (n * cs) as u64, 8),
        (36, 1, 4),
        (40, l1_off as u64, 8),
        (96, 4, 4),
        (100, 104, 4),
    ];
    header[..4].copy_from_slice(b"QFI\xfb");
    for (at, v, len) in fields {
        header[*at..at + len].copy_from_slice(&v.to_be_bytes()[8 - len..]);
    }
    let image = if tables_last {
        [header, body, l1, l2].concat()
    } else {
        [header, l1, l2, body].concat()
    };
    (image, raw)
}
