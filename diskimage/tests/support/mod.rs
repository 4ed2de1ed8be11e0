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
