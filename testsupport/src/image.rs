//! A small test image built with kiln-oci's builder: an incompressible "disk" as layer 0
//! and a rootfs layer with a few files.

use kiln_oci::builder::{BuildSpec, BuiltImage, LayerCompression, build};
use kiln_oci::format::{Layer0Form, keys};

/// Deterministic incompressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A test image: an incompressible "disk" and a rootfs with a few files.
pub struct TestImage {
    pub dir: tempfile::TempDir,
    pub disk: Vec<u8>,
    pub image: BuiltImage,
}

/// Builds a [`TestImage`] with a `disk_len`-byte disk stored as `form`.
pub fn test_image(disk_len: usize, form: Layer0Form) -> TestImage {
    let dir = tempfile::tempdir().unwrap();
    let disk = noise(disk_len, 42);
    let disk_path = dir.path().join("disk.raw");
    std::fs::write(&disk_path, &disk).unwrap();
    let root = dir.path().join("rootfs");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/hostname"), "kiln-test\n").unwrap();
    std::fs::write(root.join("etc/blob"), noise(3 << 20, 7)).unwrap();
    let image = build(&BuildSpec {
        disk: disk_path,
        layer0_form: form,
        rootfs: Some(root),
        annotations: vec![
            (keys::ROOT_PARTITION.into(), "root".into()),
            (keys::KERNEL_ARGS.into(), "console=ttyS0".into()),
        ],
        layer_compression: LayerCompression::Gzip,
        zstd_level: 1,
        work_dir: dir.path().join("work"),
    })
    .unwrap();
    TestImage { dir, disk, image }
}
