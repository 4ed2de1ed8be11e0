//! Root-tier test with the real Debian 12 image (`scripts/build-debian-image`, cached under
//! `~/.cache/kiln/images/`): pushed with the project's pusher to a real docker-registry on
//! 127.0.0.1, then every layer pulled through the fault proxy. Run:
//! `cargo test -p kiln-oci --test debian -- --ignored root_ --nocapture`.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use kiln_oci::builder::BuiltImage;
use kiln_oci::format::{Filesystem, Layer0Form, Platform, RootPartition};
use kiln_oci::reference::Reference;
use kiln_testsupport::proxy::{FaultPlan, FaultProxy};
use kiln_testsupport::registry::{Auth, Registry, client_for};

/// The cached Debian image's OCI layout; fails (never skips) when it is not built.
fn debian_layout() -> PathBuf {
    if let Some(p) = std::env::var_os("KILN_DEBIAN_IMAGE") {
        return PathBuf::from(p);
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-debian-image");
    let out = Command::new(&script)
        .arg("--path")
        .output()
        .unwrap_or_else(|e| panic!("running {} --path: {e}", script.display()));
    assert!(
        out.status.success(),
        "the Debian 12 image is not built: run scripts/build-debian-image as root first \
         (scripts/test root does): {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn debian_image() -> (PathBuf, BuiltImage) {
    let layout = debian_layout();
    let image = kiln_oci::layout::read_image(&layout, Some("bookworm"))
        .unwrap_or_else(|e| panic!("reading {}: {e:#}", layout.display()));
    (layout, image)
}

/// Streams `a` and the file at `path` side by side; true when byte-identical.
fn same_bytes(mut a: impl Read, path: &std::path::Path) -> std::io::Result<u64> {
    let mut b = BufReader::with_capacity(1 << 20, File::open(path)?);
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut total = 0u64;
    loop {
        let n = a.read(&mut x)?;
        if n == 0 {
            let mut rest = [0u8; 1];
            assert_eq!(b.read(&mut rest)?, 0, "pulled stream shorter than the blob");
            return Ok(total);
        }
        b.read_exact(&mut y[..n])?;
        assert!(x[..n] == y[..n], "pulled bytes differ at offset ~{total}");
        total += n as u64;
    }
}

fn push_debian(image: &BuiltImage) -> (Registry, f64) {
    let reg = Registry::start(Auth::None);
    let r: Reference = format!("{}/kiln/debian:12", reg.host()).parse().unwrap();
    let started = Instant::now();
    image
        .push(&client_for(&[&reg.host()], None), &r)
        .expect("push the Debian image with kiln-oci's pusher");
    (reg, started.elapsed().as_secs_f64())
}

#[test]
#[ignore = "root: needs the Debian image (scripts/build-debian-image); starts docker-registry and a fault proxy on 127.0.0.1"]
fn root_debian_image_every_layer_through_three_cuts_flip_and_truncation() {
    let (layout, image) = debian_image();
    let total: u64 = image.layers.iter().map(|l| l.size).sum();
    eprintln!(
        "Debian image {}: {} layers, {:.1} MiB",
        layout.display(),
        image.layers.len(),
        total as f64 / 1048576.0
    );
    let (reg, push_secs) = push_debian(&image);
    eprintln!("pushed in {push_secs:.1} s");

    // 1. Three cuts per blob: every layer resumes by Range and arrives byte-identical, verified.
    let proxy = FaultProxy::start(
        reg.port,
        FaultPlan {
            cuts_per_blob: 3,
            ..Default::default()
        },
    );
    let client = client_for(&[&proxy.host()], None);
    let r: Reference = format!("{}/kiln/debian:12", proxy.host()).parse().unwrap();
    let resolved = client.resolve(&r, &Platform::current()).expect("resolve");
    assert_eq!(resolved.layer0, Layer0Form::RawDisk);
    assert_eq!(
        resolved.settings.root_partition,
        RootPartition::Name("root".into())
    );
    assert_eq!(resolved.settings.filesystem, Filesystem::Ext4);
    assert_eq!(resolved.settings.label.as_deref(), Some("kiln-root"));
    assert!(
        resolved
            .settings
            .kernel_args
            .as_deref()
            .is_some_and(|a| a.contains("console=ttyS0")),
        "{:?}",
        resolved.settings.kernel_args
    );
    assert_eq!(resolved.layers.len(), image.layers.len());
    assert!(resolved.layers.len() >= 2, "layer 0 (disk) + rootfs");
    let started = Instant::now();
    for (i, (layer, built)) in resolved.layers.iter().zip(&image.layers).enumerate() {
        assert_eq!(layer.digest, built.digest, "layer {i}");
        let blob = client
            .open_blob(&resolved.reference, &layer.digest, layer.size)
            .expect("open blob");
        let progress = blob.progress();
        let n = same_bytes(blob, &built.path)
            .unwrap_or_else(|e| panic!("layer {i} {}: {e}", layer.digest));
        let snap = progress.snapshot();
        assert_eq!(
            (n, snap.done, snap.total),
            (layer.size, layer.size, layer.size)
        );
        assert!(
            snap.resumes >= 3,
            "layer {i}: {} resumes, expected >= 3 (three cuts)",
            snap.resumes
        );
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "fault-proxy pull (3 cuts per blob) of {:.1} MiB in {secs:.1} s: {:.0} MiB/s",
        total as f64 / 1048576.0,
        total as f64 / 1048576.0 / secs
    );
    let blobs = resolved.layers.len() as u32;
    assert!(proxy.stats(|s| s.cuts) >= 3 * blobs);
    // Layer 0 decompresses to the GPT disk (through the cuts again).
    let l0 = &resolved.layers[0];
    let blob = client
        .open_blob(&resolved.reference, &l0.digest, l0.size)
        .unwrap();
    let mut disk = resolved.layer0.disk_stream(blob).unwrap();
    let mut head = vec![0u8; 1024];
    disk.read_exact(&mut head).unwrap();
    assert_eq!(&head[510..512], &[0x55, 0xaa], "protective MBR signature");
    assert_eq!(&head[512..520], b"EFI PART", "primary GPT header at LBA 1");
    let rest = std::io::copy(&mut disk, &mut std::io::sink()).expect("verified disk stream");
    assert_eq!((rest + 1024) % (1 << 20), 0, "the disk is whole MiBs");
    drop(proxy);

    // 2. A flipped byte in the rootfs layer is detected: reference, expected and seen digest.
    let target = &resolved.layers[1];
    let proxy = FaultProxy::start(
        reg.port,
        FaultPlan {
            flip: Some(target.digest.to_string()),
            cuts_per_blob: 1,
            ..Default::default()
        },
    );
    let client = client_for(&[&proxy.host()], None);
    let manifest = resolved.reference.digest().unwrap().clone();
    let via = |p: &FaultProxy| -> Reference {
        format!("{}/kiln/debian@{manifest}", p.host())
            .parse()
            .unwrap()
    };
    let mut blob = client
        .open_blob(&via(&proxy), &target.digest, target.size)
        .unwrap();
    let err = std::io::copy(&mut blob, &mut std::io::sink()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{}/kiln/debian", proxy.host())),
        "names the reference: {msg}"
    );
    assert!(
        msg.contains(&format!("expected {}", target.digest)),
        "names the expected digest: {msg}"
    );
    assert!(msg.contains("seen sha256:"), "names the seen digest: {msg}");
    assert!(
        blob.read(&mut [0u8; 16]).is_err(),
        "the error sticks: never Ok(0) after a failed verdict"
    );
    assert!(proxy.stats(|s| s.flips) >= 1);
    eprintln!("flipped byte reported: {msg}");
    drop(proxy);

    // 3. Truncated bodies (every response cut short with a clean close) are never success.
    let proxy = FaultProxy::start(
        reg.port,
        FaultPlan {
            always_truncate: true,
            ..Default::default()
        },
    );
    let client = client_for(&[&proxy.host()], None);
    let pinned = via(&proxy);
    for (i, l) in resolved.layers.iter().enumerate() {
        let res = client
            .open_blob(&pinned, &l.digest, l.size)
            .and_then(|mut b| Ok(std::io::copy(&mut b, &mut std::io::sink())?));
        match res {
            // Halving the rest at every resume can reach the end: then every byte was seen
            // and verified.
            Ok(n) => assert_eq!(n, l.size, "layer {i}: a short body was reported as success"),
            Err(e) => {
                let m = format!("{e:#}");
                assert!(
                    m.contains(&l.digest.to_string()) && m.contains("kiln/debian"),
                    "layer {i}: {m}"
                );
            }
        }
    }
    assert!(proxy.stats(|s| s.truncations) >= blobs);
}
