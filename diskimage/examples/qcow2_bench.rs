//! Throughput of the streaming qcow2 converter beside `qemu-img convert -O raw`, on the same
//! qcow2 files (plain, zlib, zstd) made by `qemu-img` from a generated raw disk, or on a qcow2
//! given as the first argument. Run: `cargo run --release -p kiln-diskimage --example
//! qcow2_bench [-- FILE.qcow2]`. Prints seconds, MiB/s of qcow2 read, and the ratio.

#[path = "../tests/support/mod.rs"]
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use kiln_diskimage::qcow2::{self, Options, Zeros};

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let images: Vec<(String, PathBuf)> = match std::env::args().nth(1) {
        Some(p) => vec![("given".into(), PathBuf::from(p))],
        None => make_images(dir.path()),
    };
    println!(
        "{:8} {:>9} {:>10} {:>10} {:>10} {:>10} {:>7}",
        "image", "qcow2 MiB", "kiln s", "kiln MiB/s", "qemu s", "qemu MiB/s", "kiln/qemu"
    );
    for (name, q) in images {
        let mib = fs::metadata(&q).expect("qcow2 size").len() as f64 / (1 << 20) as f64;
        let ours = dir.path().join("ours.raw");
        let theirs = dir.path().join("theirs.raw");
        let t = Instant::now();
        let report = convert(&q, &ours);
        let kiln = t.elapsed().as_secs_f64();
        let t = Instant::now();
        support::to_raw(&q, &theirs);
        fs::File::open(&theirs)
            .and_then(|f| f.sync_all())
            .expect("syncing qemu-img's output");
        let qemu = t.elapsed().as_secs_f64();
        assert!(
            fs::read(&ours).unwrap() == fs::read(&theirs).unwrap(),
            "{name}: outputs differ"
        );
        println!(
            "{name:8} {mib:9.1} {kiln:10.2} {:10.1} {qemu:10.2} {:10.1} {:7.2}   (peak unplaced {} B)",
            mib / kiln,
            mib / qemu,
            kiln / qemu,
            report.peak_unplaced_bytes
        );
    }
}

fn make_images(dir: &Path) -> Vec<(String, PathBuf)> {
    let raw = dir.join("disk.raw");
    support::fixture_raw(&raw, 320 << 20);
    let variants: &[(&str, &[&str])] = &[
        ("plain", &[]),
        ("zlib", &["-c"]),
        ("zstd", &["-c", "-o", "compression_type=zstd"]),
    ];
    variants
        .iter()
        .map(|(name, args)| {
            let q = dir.join(format!("{name}.qcow2"));
            support::to_qcow2(&raw, &q, args);
            (name.to_string(), q)
        })
        .collect()
}

fn convert(q: &Path, out: &Path) -> qcow2::Report {
    let mut sink = fs::File::create(out).expect("creating the raw output");
    let opts = Options {
        zeros: Zeros::Holes,
        ..Options::default()
    };
    let report = qcow2::convert(
        fs::File::open(q).expect("opening the qcow2"),
        &mut sink,
        &opts,
    )
    .expect("converting");
    sink.set_len(report.virtual_size)
        .expect("sizing the raw output");
    sink.sync_all().expect("syncing the raw output");
    report
}
