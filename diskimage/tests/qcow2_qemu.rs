//! The streaming converter against `qemu-img convert -O raw`, byte for byte, on images
//! `qemu-img convert -O qcow2` makes here from a generated raw disk (data, zeros, text).
//! Skipped, saying so, when `qemu-img` is absent (scripts/setup installs qemu-utils).

mod support;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use kiln_diskimage::qcow2::{self, Options, Zeros};
use support::{fixture_raw, qemu_img_present, to_qcow2, to_raw};

/// (name, qemu-img convert -O qcow2 arguments)
const VARIANTS: &[(&str, &[&str])] = &[
    ("v3-64k", &[]),
    ("v3-64k-zlib", &["-c"]),
    ("v3-64k-zstd", &["-c", "-o", "compression_type=zstd"]),
    ("v3-4k", &["-o", "cluster_size=4096"]),
    ("v3-4k-zlib", &["-c", "-o", "cluster_size=4096"]),
    ("v3-2m", &["-o", "cluster_size=2M"]),
    (
        "v3-2m-zstd",
        &["-c", "-o", "cluster_size=2M,compression_type=zstd"],
    ),
    ("v2-64k", &["-o", "compat=0.10"]),
    ("v2-64k-zlib", &["-c", "-o", "compat=0.10"]),
    ("v2-512-zlib", &["-c", "-o", "compat=0.10,cluster_size=512"]),
    ("v3-metadata-prealloc", &["-o", "preallocation=metadata"]),
];

#[test]
fn qcow2_matches_qemu_img_byte_for_byte() {
    if !qemu_img_present() {
        eprintln!("SKIPPED: qemu-img is not installed (apt-get install qemu-utils)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    fixture_raw(&raw, 6 << 20);
    for (name, args) in VARIANTS {
        let q = dir.path().join(format!("{name}.qcow2"));
        to_qcow2(&raw, &q, args);
        let want = dir.path().join(format!("{name}.want"));
        to_raw(&q, &want);
        let want = fs::read(&want).unwrap();
        for zeros in [Zeros::Holes, Zeros::Write] {
            let got = dir.path().join(format!("{name}.got"));
            let report = convert_file(&q, &got, zeros);
            assert!(
                fs::read(&got).unwrap() == want,
                "{name} ({zeros:?}): differs from qemu-img convert -O raw"
            );
            eprintln!("{name:22} {zeros:?}: {report:?}");
        }
    }
}

fn convert_file(q: &Path, out: &Path, zeros: Zeros) -> qcow2::Report {
    let mut sink = fs::File::create(out).unwrap();
    if zeros == Zeros::Write {
        // Garbage where zeros must land: Write mode must overwrite it.
        sink.write_all(&vec![0xa5; 6 << 20]).unwrap();
        sink.seek(SeekFrom::Start(0)).unwrap();
    }
    let input = fs::File::open(q).unwrap();
    let opts = Options {
        zeros,
        ..Options::default()
    };
    let report =
        qcow2::convert(input, &mut sink, &opts).unwrap_or_else(|e| panic!("{}: {e}", q.display()));
    sink.set_len(report.virtual_size).unwrap();
    report
}
