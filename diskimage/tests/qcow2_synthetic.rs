//! Images built here: tables after the data they place (the buffered path and its budget),
//! and header fields Kiln refuses, each named in the error.

mod support;

use kiln_diskimage::qcow2::{self, Event, Options, Qcow2Error};

fn run(image: &[u8], budget: usize) -> Result<(qcow2::Report, Vec<u8>), Qcow2Error> {
    let mut disk = Vec::new();
    let report = qcow2::extents(
        image,
        &Options {
            budget,
            ..Options::default()
        },
        |e| {
            match e {
                Event::Header(h) => disk.resize(h.virtual_size as usize, 0xa5),
                Event::Data { offset, bytes } => {
                    disk[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes)
                }
                Event::Zero { offset, len } => {
                    disk[offset as usize..(offset + len) as usize].fill(0)
                }
            }
            Ok(())
        },
    )?;
    Ok((report, disk))
}

#[test]
fn tables_first_or_last_convert_and_last_needs_buffering() {
    for bits in [9, 12, 16] {
        for tables_last in [false, true] {
            let (image, raw) = support::synthetic(bits, tables_last);
            let (report, disk) = run(&image, 256 << 20)
                .unwrap_or_else(|e| panic!("bits {bits} last {tables_last}: {e}"));
            assert!(
                disk == raw,
                "bits {bits} tables_last {tables_last}: wrong disk"
            );
            assert_eq!(report.compressed_clusters, 4);
            let data_bytes = (image.len() - 3 * (1 << bits)) as f64;
            eprintln!(
                "bits {bits} tables_last {tables_last}: unplaced peak {} of {data_bytes} data bytes",
                report.peak_unplaced_bytes
            );
            if tables_last {
                assert!(
                    report.peak_unplaced_bytes as f64 >= data_bytes * 0.9,
                    "{report:?}"
                );
            }
        }
    }
}

#[test]
fn tables_last_over_budget_fails_naming_the_remedy() {
    let (image, _) = support::synthetic(12, true);
    let err = run(&image, 16 << 10).unwrap_err();
    assert!(
        matches!(err, Qcow2Error::BufferExceeded { budget: 16384, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("qemu-img convert -O raw"), "{err}");
}

fn set(image: &mut [u8], at: usize, v: u64, len: usize) {
    image[at..at + len].copy_from_slice(&v.to_be_bytes()[8 - len..]);
}

#[test]
fn refused_headers_name_the_field() {
    let cases: &[(&str, usize, u64, usize, &str)] = &[
        ("backing file", 8, 512, 8, "backing_file_offset"),
        ("encryption", 32, 1, 4, "crypt_method"),
        ("version 4", 4, 4, 4, "version"),
        ("cluster_bits 22", 20, 22, 4, "cluster_bits"),
        ("cluster_bits 8", 20, 8, 4, "cluster_bits"),
        ("external data file", 72, 1 << 2, 8, "external data file"),
        ("corrupt", 72, 1 << 1, 8, "corrupt"),
        ("extended L2", 72, 1 << 4, 8, "extended L2"),
        (
            "unknown incompatible",
            72,
            1 << 9,
            8,
            "unknown feature bits 0x200",
        ),
        ("l1_size too small", 36, 0, 4, "l1_size"),
        ("l1 in header", 40, 0, 8, "l1_table_offset"),
        ("huge virtual size", 24, 1 << 60, 8, "size"),
        ("header_length huge", 100, 1 << 20, 4, "header_length"),
        ("zstd without bit", 100, 112, 4, "compression_type"),
        (
            "refcount table huge",
            56,
            1 << 20,
            4,
            "refcount_table_clusters",
        ),
        ("magic", 0, 0, 4, "not a qcow2"),
    ];
    for (name, at, v, len, want) in cases {
        let (mut image, _) = support::synthetic(12, false);
        set(&mut image, *at, *v, *len);
        if *name == "zstd without bit" {
            image[104] = 1;
        }
        let err = run(&image, 256 << 20).map(|_| ()).unwrap_err();
        assert!(err.to_string().contains(want), "{name}: {err}");
    }
}

#[test]
fn truncated_image_names_the_missing_cluster() {
    let (image, _) = support::synthetic(12, false);
    let err = run(&image[..image.len() - 8192], 256 << 20)
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, Qcow2Error::Truncated { .. }), "{err}");
}
