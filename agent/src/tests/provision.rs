//! Root tests of the provisioning engine: loop devices on sparse files, real mkfs, and
//! `umoci unpack` as the reference for layer extraction. Every test cleans up through Drop
//! guards (loop devices detached, mounts unmounted).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{Loop, serial, sh};
use crate::provision::events::no_progress;
use crate::provision::extract::tests::Layer;
use crate::provision::gpt::testimg;
use crate::provision::rootfs::{FsSpec, FsType};
use crate::provision::*;
use kiln_oci::compression::{Compression, compress};
use kiln_oci::digest::{Digest as OciDigest, VerifyingReader};

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// An image with an ext4 filesystem (small) already in its root partition.
fn image_with_ext4(size: u64) -> Vec<u8> {
    let mut img = testimg::make(size, 512);
    let start = 4usize << 20;
    let end = img.len() - (1 << 20);
    let fsf = tempfile::NamedTempFile::new().unwrap();
    fsf.as_file().set_len((end - start) as u64).unwrap();
    sh(
        "mkfs.ext4",
        &["-q", "-F", "-L", "imgroot", fsf.path().to_str().unwrap()],
    );
    let fsb = fs::read(fsf.path()).unwrap();
    img[start..end].copy_from_slice(&fsb);
    img
}

pub(super) fn layers_for_boot() -> Vec<Vec<u8>> {
    vec![
        Layer::new()
            .dir("boot/", 0o755)
            .file("boot/vmlinuz-6.1.0-kiln", 0o644, b"KERNEL")
            .file("boot/initrd.img-6.1.0-kiln", 0o644, b"INITRD")
            .symlink("vmlinuz", "boot/vmlinuz-6.1.0-kiln")
            .symlink("initrd.img", "boot/initrd.img-6.1.0-kiln")
            .dir("etc/", 0o755)
            .file("etc/old", 0o644, b"old")
            .file("usr/lib/systemd/systemd", 0o755, b"fake systemd")
            .bytes(),
        Layer::new()
            .file("etc/.wh.old", 0o644, b"")
            .file("etc/hostname", 0o644, b"kiln\n")
            .bytes(),
    ]
}

pub(super) fn check_grown(dev: &Path, disk_size: u64) -> gptman::GPT {
    let mut f = fs::File::open(dev).unwrap();
    let gpt = gptman::GPT::find_from(&mut f).unwrap();
    assert_eq!(
        gpt.header.backup_lba,
        disk_size / 512 - 1,
        "backup GPT at the end"
    );
    assert_eq!(
        gpt[3].ending_lba, gpt.header.last_usable_lba,
        "root partition to the end"
    );
    let mut last = vec![0u8; 512];
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::Start(disk_size - 512)).unwrap();
    f.read_exact(&mut last).unwrap();
    assert_eq!(&last[..8], b"EFI PART");
    gpt
}

#[test]
#[ignore = "root: loop devices, mkfs, mount"]
fn root_provision_end_to_end_on_loop() {
    let _serial = serial();
    const DISK: u64 = 4 << 30;
    for (fs_type, prefilled) in [
        (FsType::Ext4, false),
        (FsType::Ext4, true),
        (FsType::Xfs, false),
        (FsType::Btrfs, false),
    ] {
        let lo = Loop::new(DISK);
        let img = if prefilled {
            image_with_ext4(64 << 20)
        } else {
            testimg::make(64 << 20, 512)
        };
        let l0 = compress(Compression::Zstd, &img);
        let d0 = OciDigest::of(&l0);
        let tmp = tempfile::tempdir().unwrap();
        let order = run::Order {
            disk: lo.dev.clone(),
            root: gpt::RootChoice::Default,
            fs: FsSpec {
                fstype: fs_type,
                label: Some("kroot".into()),
                uuid: Some("6a1c5f1e-2f7e-4d0a-8d5b-3c2b1a0f9e8d".into()),
            },
            seed: Some(cloudinit::Seed {
                instance_id: "i-1".into(),
                user_data: "#cloud-config\n".into(),
                ..Default::default()
            }),
            inject: Some(inject::InjectSpec {
                binary: PathBuf::from("/proc/self/exe"),
                config: inject::AgentConfig {
                    url: "https://cp".into(),
                    machine_id: "m".into(),
                    credential: "c".into(),
                    ca_pin: None,
                    ..Default::default()
                },
                args: vec!["serve".into()],
            }),
            extra_args: vec!["console=ttyS0".into()],
            mountpoint: tmp.path().join("mnt"),
            stage: tmp.path().join("stage"),
            extract: extract::Options::default(),
        };
        let layers: Vec<run::LayerInput> = layers_for_boot()
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                let l = compress(Compression::Gzip, &l);
                let d = OciDigest::of(&l);
                run::LayerInput {
                    reader: Box::new(VerifyingReader::new(std::io::Cursor::new(l), d, "l")),
                    size: None,
                    label: format!("layer{i}"),
                }
            })
            .collect();
        let input = run::LayerInput {
            reader: Box::new(VerifyingReader::new(std::io::Cursor::new(l0), d0, "l0")),
            size: None,
            label: "l0".into(),
        };
        let t0 = std::time::Instant::now();
        let show = |e: Event| eprintln!("{:6.2}s {e}", t0.elapsed().as_secs_f64());
        let out = run::provision(&order, input, &mut layers.into_iter().map(Ok), &show)
            .unwrap_or_else(|e| panic!("{fs_type:?} prefilled={prefilled}: {e:#}"));
        let want_action = if prefilled {
            rootfs::FsAction::Grown
        } else {
            rootfs::FsAction::Created
        };
        assert_eq!(
            (out.rootfs.fstype, out.rootfs.action),
            (fs_type, want_action)
        );
        assert_eq!(
            out.plan.cmdline,
            "root=PARTUUID=aaaaaaaa-0000-0000-0000-000000000003 ro console=ttyS0"
        );
        assert_eq!(fs::read(&out.plan.kernel).unwrap(), b"KERNEL");
        let gpt = check_grown(&lo.dev, DISK);
        // Partition content: boot code and ESP bytes as in the image.
        let all = lo.read_at(0, 4 << 20);
        assert_eq!(&all[..440], &img[..440]);
        assert_eq!(&all[(2 << 20)..(4 << 20)], &img[(2 << 20)..(4 << 20)]);
        drop(all);
        // Mount again and look: filesystem spans the partition, layers applied.
        let part = PathBuf::from(format!("{}p3", lo.dev.display()));
        let m = tmp.path().join("check");
        fs::create_dir_all(&m).unwrap();
        sh("mount", &[part.to_str().unwrap(), m.to_str().unwrap()]);
        let mut lo = lo;
        lo.mounts.push(m.clone());
        let st = rustix::fs::statvfs(&m).unwrap();
        let fs_bytes = st.f_blocks * st.f_frsize;
        let part_bytes = (gpt[3].ending_lba - gpt[3].starting_lba + 1) * 512;
        assert!(
            fs_bytes * 100 > part_bytes * 90,
            "{fs_type:?}: fs {fs_bytes} vs partition {part_bytes}"
        );
        assert!(!m.join("etc/old").exists());
        assert_eq!(fs::read(m.join("etc/hostname")).unwrap(), b"kiln\n");
        assert!(m.join("var/lib/cloud/seed/nocloud/meta-data").exists());
        assert!(
            m.join("etc/systemd/system/multi-user.target.wants/kiln-agent.service")
                .symlink_metadata()
                .is_ok()
        );
        let label = sh(
            "blkid",
            &["-o", "value", "-s", "LABEL", part.to_str().unwrap()],
        );
        let want_label = if prefilled { "imgroot" } else { "kroot" };
        assert_eq!(label.trim(), want_label, "{fs_type:?}");
        if !prefilled {
            let uuid = sh(
                "blkid",
                &["-o", "value", "-s", "UUID", part.to_str().unwrap()],
            );
            assert_eq!(uuid.trim(), "6a1c5f1e-2f7e-4d0a-8d5b-3c2b1a0f9e8d");
        }
    }
}

#[test]
#[ignore = "root: loop devices"]
fn root_corrupt_layer0_leaves_no_bootable_partition_table() {
    let _serial = serial();
    const DISK: u64 = 4 << 30;
    let lo = Loop::new(DISK);
    // An older installation is on the disk.
    let old = testimg::make(64 << 20, 512);
    write_layer0_ok(&lo, &old);
    let img = testimg::make(96 << 20, 512);
    let mut l0 = compress(Compression::Zstd, &img);
    let good = OciDigest::of(&l0);
    let n = l0.len();
    l0[n / 2] ^= 0x40; // a flipped byte: the digest fails at EOF (decoding may fail first)
    let e = layer0::write_layer0(
        VerifyingReader::new(std::io::Cursor::new(l0), good, "sha256:l0"),
        &lo.dev,
        &no_progress,
    )
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("partition tables wiped"), "{msg}");
    let all = lo.read_at(0, 1 << 20);
    assert!(
        all[..1 << 20].iter().all(|b| *b == 0),
        "MBR and primary GPT zero"
    );
    assert!(layer0::image_geometry(&all[..1 << 20]).is_none());
    for end in [96usize << 20, 64 << 20, DISK as usize] {
        assert_ne!(
            &lo.read_at(end as u64 - 512, 8)[..],
            b"EFI PART",
            "no backup GPT header at {end}"
        );
    }
    let mut f = fs::File::open(&lo.dev).unwrap();
    assert!(gptman::GPT::find_from(&mut f).is_err());
    // The kernel agrees after a re-read: no partitions.
    let _ = blockdev::reread_partition_table(&f);
    assert!(!Path::new(&format!("/sys/class/block/{}p1", lo.name())).exists());
}

fn write_layer0_ok(lo: &Loop, img: &[u8]) {
    layer0::write_layer0(img, &lo.dev, &no_progress).unwrap();
}

#[test]
#[ignore = "root: loop devices"]
fn root_too_small_disk_refused_before_any_write() {
    let _serial = serial();
    let lo = Loop::new(64 << 20);
    {
        let mut f = fs::OpenOptions::new().write(true).open(&lo.dev).unwrap();
        f.write_all(&vec![0x5a; 64 << 20]).unwrap();
        f.sync_all().unwrap();
    }
    let before = sha256_hex(&lo.read_all());
    let img = testimg::make(128 << 20, 512);
    let l0 = compress(Compression::Zstd, &img);
    let e = layer0::write_layer0(&l0[..], &lo.dev, &no_progress).unwrap_err();
    assert!(format!("{e:#}").contains("nothing was written"), "{e:#}");
    assert_eq!(sha256_hex(&lo.read_all()), before, "disk unchanged");
}

// ---- extraction compared with umoci ----

fn umoci_layers() -> Vec<Vec<u8>> {
    use tar::EntryType as T;
    let cap: &[u8] = &[
        0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let long = format!("usr/share/doc/{}/copyright", "long-package-name-".repeat(8));
    vec![
        Layer::new()
            .dir("./", 0o755)
            .dir("etc/", 0o755)
            .file("etc/passwd", 0o644, b"root:x:0:0::/root:/bin/sh\n")
            .file("etc/shadow", 0o640, b"root:*::0:::::\n")
            .rich(
                "etc/gshadow",
                T::Regular,
                0o640,
                (0, 42),
                &[],
                None,
                b"root:*::\n",
            )
            .dir("usr/", 0o755)
            .dir("usr/bin/", 0o755)
            .file("usr/bin/busybox", 0o755, &vec![0x90u8; 200_000])
            .hardlink("usr/bin/sh", "usr/bin/busybox")
            .rich(
                "usr/bin/passwd",
                T::Regular,
                0o4755,
                (0, 0),
                &[],
                None,
                b"suid",
            )
            .rich(
                "usr/bin/wall",
                T::Regular,
                0o2755,
                (0, 5),
                &[],
                None,
                b"sgid",
            )
            .rich(
                "usr/bin/ping",
                T::Regular,
                0o755,
                (0, 0),
                &[("security.capability", cap)],
                None,
                b"ping",
            )
            .rich(
                "usr/bin/tagged",
                T::Regular,
                0o644,
                (1000, 1000),
                &[("user.kiln.note", b"hello"), ("trusted.kiln", b"t")],
                None,
                b"x",
            )
            .symlink("bin", "usr/bin")
            .symlink("usr/bin/vi", "/usr/bin/busybox")
            .dir("tmp/", 0o1777)
            .rich(&long, T::Regular, 0o644, (0, 0), &[], None, b"GPL")
            .rich(
                &format!("{long}.lnk"),
                T::Symlink,
                0o777,
                (0, 0),
                &[],
                Some(&format!("/{long}")),
                b"",
            )
            .dev("dev/null", T::Char, 1, 3)
            .dev("dev/loop0", T::Block, 7, 0)
            .fifo("run/initctl")
            .dir("var/", 0o755)
            .dir("var/cache/", 0o755)
            .file("var/cache/a", 0o644, b"a")
            .dir("var/cache/sub/", 0o700)
            .file("var/cache/sub/b", 0o600, b"b")
            .dir("opt/", 0o755)
            .file("opt/keep", 0o644, b"k")
            .file("opt/drop", 0o644, b"d")
            .bytes(),
        Layer::new()
            .file("etc/.wh.shadow", 0o644, b"")
            .dir("var/cache/", 0o755)
            .file("var/cache/.wh..wh..opq", 0o644, b"")
            .file("var/cache/new", 0o644, b"n")
            .file("opt/.wh.drop", 0o644, b"")
            .file("opt/keep", 0o600, b"changed")
            .file(".wh.tmp", 0o644, b"")
            .rich(
                "home/user/.profile",
                T::Regular,
                0o644,
                (1000, 1000),
                &[],
                None,
                b"PS1=$\n",
            )
            .bytes(),
        Layer::new()
            .dir("tmp/", 0o1777)
            .hardlink("usr/bin/ls", "usr/bin/busybox")
            .file("usr/bin/.wh.wall", 0o644, b"")
            .symlink("etc/passwd", "/dev/null")
            .bytes(),
    ]
}

/// Writes an OCI layout with `layers` (gzip on disk), tag "test".
fn write_layout(dir: &Path, layers: &[Vec<u8>]) -> Vec<(String, u64)> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| -> String {
        let h = sha256_hex(b);
        fs::write(blobs.join(&h), b).unwrap();
        h
    };
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut out = Vec::new();
    for l in layers {
        diff_ids.push(format!("sha256:{}", sha256_hex(l)));
        let gz = compress(Compression::Gzip, l);
        let h = put(&gz);
        descs.push(serde_json::json!({"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":format!("sha256:{h}"),"size":gz.len()}));
        out.push((h, gz.len() as u64));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture":"amd64","os":"linux","config":{},
        "rootfs":{"type":"layers","diff_ids":diff_ids}
    }))
    .unwrap();
    let ch = put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":format!("sha256:{ch}"),"size":config.len()},
        "layers":descs
    }))
    .unwrap();
    let mh = put(&manifest);
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion":2,"manifests":[{
            "mediaType":"application/vnd.oci.image.manifest.v1+json","digest":format!("sha256:{mh}"),"size":manifest.len(),
            "annotations":{"org.opencontainers.image.ref.name":"test"}}]}))
        .unwrap(),
    )
    .unwrap();
    out
}

/// type, mode, uid, gid, rdev, xattrs, link target, content hash of every entry.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let p = root.join(&rel);
        let m = fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else if ft.is_char_device() {
            "chr"
        } else if ft.is_block_device() {
            "blk"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "other"
        };
        let mut x = Vec::new();
        let mut names = vec![0u8; 4096];
        let n = rustix::fs::llistxattr(&p, &mut names[..]).unwrap_or(0);
        let mut keys: Vec<&[u8]> = names[..n]
            .split(|b| *b == 0)
            .filter(|k| !k.is_empty())
            .collect();
        keys.sort();
        for k in keys {
            let k = String::from_utf8_lossy(k).into_owned();
            let mut v = vec![0u8; 4096];
            let vn = rustix::fs::lgetxattr(&p, k.as_str(), &mut v[..]).unwrap_or(0);
            x.push(format!("{k}={}", sha256_hex(&v[..vn])));
        }
        let extra = match kind {
            "symlink" => format!("-> {}", fs::read_link(&p).unwrap().display()),
            "file" => sha256_hex(&fs::read(&p).unwrap()),
            "chr" | "blk" => format!("rdev {}", m.rdev()),
            _ => String::new(),
        };
        let nlink = if kind == "file" { m.nlink() } else { 0 };
        out.insert(
            format!("/{}", rel.display()),
            format!(
                "{kind} {:o} {}:{} n{nlink} [{}] {extra}",
                m.mode() & 0o7777,
                m.uid(),
                m.gid(),
                x.join(",")
            ),
        );
        if ft.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
            }
        }
    }
    out
}

#[test]
#[ignore = "root: umoci unpack as root, device nodes, ownership"]
fn root_extraction_matches_umoci_unpack() {
    let _serial = serial();
    let t = tempfile::tempdir_in("/var/tmp").unwrap();
    let layout_dir = t.path().join("image");
    let layers = umoci_layers();
    let descs = write_layout(&layout_dir, &layers);
    // Reference.
    let bundle = t.path().join("bundle");
    sh(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:test", layout_dir.display()),
            bundle.to_str().unwrap(),
        ],
    );
    // Ours, from the same blobs through the verified reader.
    let ours = t.path().join("ours");
    fs::create_dir(&ours).unwrap();
    let root = confined::Root::open(&ours).unwrap();
    let ds = kiln_oci::layout::read_platform_image(&layout_dir, "linux", "amd64")
        .unwrap()
        .layers;
    assert_eq!(ds.len(), descs.len());
    for d in &ds {
        let r = kiln_oci::layout::open_blob(&layout_dir, &d.digest).unwrap();
        extract::extract_layer(
            r,
            &root,
            &extract::Options::default(),
            Some(d.size),
            d.digest.as_str(),
            &no_progress,
        )
        .unwrap();
    }
    let want = snapshot(&bundle.join("rootfs"));
    let got = snapshot(&ours);
    let mut diffs = Vec::new();
    for k in want
        .keys()
        .chain(got.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        if k == "/" {
            continue; // umoci makes rootfs/ itself; its mode comes from the bundle, not the layer
        }
        if want.get(k) != got.get(k) {
            diffs.push(format!(
                "{k}:\n  umoci: {:?}\n  kiln:  {:?}",
                want.get(k),
                got.get(k)
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
    assert!(want.len() > 25, "{want:#?}");
    // Things the layers promise, checked directly too (so equality is not vacuous).
    let has = |k: &str, needle: &str| got.get(k).is_some_and(|v| v.contains(needle));
    assert!(
        has("/usr/bin/ping", "security.capability="),
        "{:?}",
        got.get("/usr/bin/ping")
    );
    assert!(
        has("/usr/bin/tagged", "trusted.kiln=") && has("/usr/bin/tagged", "user.kiln.note="),
        "{:?}",
        got.get("/usr/bin/tagged")
    );
    assert!(has("/usr/bin/tagged", " 1000:1000 "));
    assert!(has("/usr/bin/passwd", "file 4755 "));
    assert!(has("/tmp", "dir 1777 "));
    assert!(
        has("/dev/null", "chr 666") || has("/dev/null", "chr 660"),
        "{:?}",
        got.get("/dev/null")
    );
    assert!(has("/run/initctl", "fifo "));
    assert!(
        has("/usr/bin/busybox", " n3 "),
        "hardlinks sh and ls: {:?}",
        got.get("/usr/bin/busybox")
    );
    assert!(has("/etc/passwd", "-> /dev/null"));
    assert!(has("/opt/keep", "file 600 "));
    for gone in [
        "/etc/shadow",
        "/var/cache/a",
        "/var/cache/sub",
        "/opt/drop",
        "/usr/bin/wall",
    ] {
        assert!(!got.contains_key(gone), "{gone} should be gone");
    }
    assert!(got.contains_key("/var/cache/new") && got.contains_key("/home/user/.profile"));
}

#[test]
#[ignore = "root: loop devices, mkfs, mount"]
fn root_cli_hand_run_on_loop() {
    let _serial = serial();
    let lo = Loop::new(1 << 30);
    let t = tempfile::tempdir_in("/var/tmp").unwrap();
    let layout_dir = t.path().join("image");
    // Layer 0 is a zstd raw disk blob; then two tar layers.
    let l0 = compress(Compression::Zstd, &testimg::make(64 << 20, 512));
    let mut blobs = vec![l0];
    blobs.extend(layers_for_boot());
    // write_layout gzips every blob: layer 0 becomes gzip(zstd(disk)); sniffing then sees
    // gzip and the content is still a zstd stream, so write layer 0 raw instead.
    let descs = write_layout(&layout_dir, &blobs[1..]);
    let _ = descs;
    let l0_hex = sha256_hex(&blobs[0]);
    fs::write(layout_dir.join("blobs/sha256").join(&l0_hex), &blobs[0]).unwrap();
    // Put layer 0 first in the manifest.
    let idx: serde_json::Value =
        serde_json::from_slice(&fs::read(layout_dir.join("index.json")).unwrap()).unwrap();
    let mdig = idx["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let mut man: serde_json::Value =
        serde_json::from_slice(&fs::read(layout_dir.join("blobs/sha256").join(&mdig)).unwrap())
            .unwrap();
    man["layers"].as_array_mut().unwrap().insert(
        0,
        serde_json::json!({"mediaType":"application/vnd.kiln.disk.v1.raw+zstd","digest":format!("sha256:{l0_hex}"),"size":blobs[0].len()}),
    );
    let mb = serde_json::to_vec(&man).unwrap();
    let mh = sha256_hex(&mb);
    fs::write(layout_dir.join("blobs/sha256").join(&mh), &mb).unwrap();
    fs::write(
        layout_dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":format!("sha256:{mh}"),"size":mb.len()}]})).unwrap(),
    )
    .unwrap();

    let name = lo.name();
    let dev = lo.dev.display().to_string();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "--image-file",
            layout_dir.to_str().unwrap(),
            "--disk",
            &format!("name={name}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v.extend([
            "--mount".into(),
            t.path().join("mnt").display().to_string(),
            "--stage".into(),
            t.path().join("stage").display().to_string(),
        ]);
        v
    };
    let zero_head = || lo.read_at(0, 1 << 20).iter().all(|b| *b == 0);
    // Dry run: nothing written.
    crate::provision::cli(&args(&[])).unwrap();
    assert!(zero_head());
    // Wrong confirmation: refused, nothing written.
    let e = crate::provision::cli(&args(&["--yes-really-wipe", "/dev/sdz"])).unwrap_err();
    assert!(e.to_string().contains("refusing"), "{e}");
    assert!(zero_head());
    // Hints that match nothing: refused with the list of disks.
    let e = crate::provision::cli(&[
        "--image-file".into(),
        layout_dir.display().to_string(),
        "--disk".into(),
        "serial=NO-SUCH-DISK".into(),
    ])
    .unwrap_err();
    assert!(
        format!("{e:#}").contains(&format!("/dev/{name} (")),
        "{e:#}"
    );
    // The real thing.
    crate::provision::cli(&args(&[
        "--yes-really-wipe",
        &dev,
        "--instance-id",
        "i-cli",
        "--fs",
        "ext4",
    ]))
    .unwrap();
    check_grown(&lo.dev, 1 << 30);
    assert_eq!(fs::read(t.path().join("stage/vmlinuz")).unwrap(), b"KERNEL");
}

// kiln-oci's registry harness (a real docker-registry in a temp dir), included as it is.
use kiln_testsupport::registry;

#[test]
#[ignore = "root: loop devices, mkfs, mount, docker-registry"]
fn root_cli_image_from_registry_on_loop() {
    use kiln_oci::builder::{BuildSpec, LayerCompression, build};
    use kiln_oci::format::{Layer0Form, keys};
    let _serial = serial();
    let lo = Loop::new(1 << 30);
    let t = tempfile::tempdir_in("/var/tmp").unwrap();
    let disk = t.path().join("disk.raw");
    fs::write(&disk, testimg::make(64 << 20, 512)).unwrap();
    let rootfs = t.path().join("rootfs.tar");
    fs::write(&rootfs, &layers_for_boot()[0]).unwrap();
    // The image's settings: the engine must take label and kernel arguments from them.
    let image = build(&BuildSpec {
        disk,
        layer0_form: Layer0Form::RawDisk,
        rootfs: Some(rootfs),
        annotations: vec![
            (keys::ROOT_LABEL.into(), "img-root".into()),
            (keys::KERNEL_ARGS.into(), "quiet kiln.test=1".into()),
        ],
        layer_compression: LayerCompression::Gzip,
        zstd_level: 1,
        work_dir: t.path().join("work"),
    })
    .unwrap();
    let reg = registry::Registry::start(registry::Auth::None);
    let reference = format!("{}/kiln/t:latest", reg.host());
    image
        .push(
            &registry::client_for(&[&reg.host()], None),
            &reference.parse().unwrap(),
        )
        .unwrap();
    let name = lo.name();
    let dev = lo.dev.display().to_string();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["--image", &reference, "--disk", &format!("name={name}")]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v.extend([
            "--mount".into(),
            t.path().join("mnt").display().to_string(),
            "--stage".into(),
            t.path().join("stage").display().to_string(),
        ]);
        v
    };
    // Without --insecure-registry the client speaks HTTPS to the plain-HTTP registry.
    let e = crate::provision::cli(&args(&[])).unwrap_err();
    assert!(format!("{e:#}").contains(&reference), "{e:#}");
    let insecure = ["--insecure-registry", &reg.host()];
    // Dry run: nothing written.
    crate::provision::cli(&args(&insecure)).unwrap();
    assert!(lo.read_at(0, 1 << 20).iter().all(|b| *b == 0));
    let mut real = insecure.to_vec();
    real.extend(["--yes-really-wipe", &dev]);
    crate::provision::cli(&args(&real)).unwrap();
    check_grown(&lo.dev, 1 << 30);
    let label = sh(
        "blkid",
        &["-s", "LABEL", "-o", "value", &format!("{dev}p3")],
    );
    assert_eq!(label.trim(), "img-root");
    assert_eq!(fs::read(t.path().join("stage/vmlinuz")).unwrap(), b"KERNEL");
}

#[test]
#[ignore = "root: loop device holding an ISO made by xorriso"]
fn root_installer_iso_on_a_disk_is_refused() {
    let _g = serial();
    let t = tempfile::tempdir().unwrap();
    fs::write(t.path().join("hello"), b"kiln").unwrap();
    let iso = t.path().join("kiln.iso");
    sh(
        "xorriso",
        &[
            "-as",
            "mkisofs",
            "-quiet",
            "-volid",
            disk::INSTALLER_VOLUME_ID,
            "-o",
            iso.to_str().unwrap(),
            t.path().join("hello").to_str().unwrap(),
        ],
    );
    let lo = Loop::new(64 << 20);
    sh(
        "dd",
        &[
            &format!("if={}", iso.display()),
            &format!("of={}", lo.dev.display()),
            "conv=notrunc,fsync",
            "status=none",
        ],
    );
    let disks = disk::inventory_system().unwrap();
    let d = disks.iter().find(|d| d.name == lo.name()).unwrap();
    assert_eq!(d.iso_volume_id.as_deref(), Some("KILN"));
    let hints = select::parse_hints(&format!("name={}", lo.name())).unwrap();
    let e = select::choose(&disks, &hints, &select::Policy::default()).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(&format!("/dev/{} (", lo.name())) && text.contains("installer boot medium"),
        "{text}"
    );
}

#[test]
#[ignore = "root: loop devices, mkfs, mount"]
fn root_boot_installed_plan_on_loop() {
    let _serial = serial();
    const DISK: u64 = 1 << 30;
    let lo = Loop::new(DISK);
    let img = testimg::make(64 << 20, 512);
    let l0 = compress(Compression::Zstd, &img);
    let d0 = OciDigest::of(&l0);
    let tmp = tempfile::tempdir().unwrap();
    let order = run::Order {
        disk: lo.dev.clone(),
        root: gpt::RootChoice::Default,
        fs: FsSpec::default(),
        seed: None,
        inject: None,
        extra_args: vec!["console=ttyS0,115200".into(), "kiln.debug".into()],
        mountpoint: tmp.path().join("mnt"),
        stage: tmp.path().join("stage"),
        extract: extract::Options::default(),
    };
    let layers: Vec<run::LayerInput> = layers_for_boot()
        .into_iter()
        .map(|l| {
            let d = OciDigest::of(&l);
            run::LayerInput {
                reader: Box::new(VerifyingReader::new(std::io::Cursor::new(l), d, "l")),
                size: None,
                label: "layer".into(),
            }
        })
        .collect();
    let input = run::LayerInput {
        reader: Box::new(VerifyingReader::new(std::io::Cursor::new(l0), d0, "l0")),
        size: None,
        label: "l0".into(),
    };
    let out = run::provision(&order, input, &mut layers.into_iter().map(Ok), &no_progress).unwrap();
    // Later, from the installer: find that disk's installed system without provisioning.
    let hint = format!("name={}", lo.name());
    let stage = tmp.path().join("stage2");
    let lines = std::sync::Mutex::new(Vec::new());
    let report = |e: crate::events::Event| lines.lock().unwrap().push(e.to_string());
    let plan = crate::kexec::installed::plan_installed_at(
        Some(&hint),
        &tmp.path().join("ro"),
        &stage,
        &report,
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        plan.cmdline, out.plan.cmdline,
        "same command line as after provisioning"
    );
    assert_eq!(
        plan.cmdline,
        "root=PARTUUID=aaaaaaaa-0000-0000-0000-000000000003 ro console=ttyS0,115200 kiln.debug"
    );
    assert_eq!(plan.source, "links");
    assert_eq!(fs::read(&plan.kernel).unwrap(), b"KERNEL");
    assert_eq!(fs::read(plan.initrd.as_ref().unwrap()).unwrap(), b"INITRD");
    let lines = lines.lock().unwrap().clone();
    assert!(
        lines[0].contains(&format!("{}p3", lo.dev.display())),
        "{lines:?}"
    );
    // Nothing left mounted.
    let mi = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mi.contains(&format!("{}p", lo.dev.display())), "{mi}");
    // A disk without an installed system: the error says what was looked at.
    let blank = Loop::new(64 << 20);
    let e = crate::kexec::installed::plan_installed_at(
        Some(&format!("name={}", blank.name())),
        &tmp.path().join("ro"),
        &stage,
        &report,
    )
    .unwrap_err();
    assert!(
        format!("{e:#}").contains("no installed system found"),
        "{e:#}"
    );
}
