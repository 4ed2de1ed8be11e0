//! Benchmark, not a test: layer-0 write throughput against `zstd -dc | dd oflag=direct`, and
//! layer extraction time against `umoci unpack`, run side by side, printed as ratios.
//! Needs root, losetup, zstd, dd, umoci. Run through `scripts/bench-provision`.
//! `KILN_BENCH_MIB` sets the disk image size (default 1024), `KILN_BENCH_FILES` the number
//! of files in the extraction layer (default 20000).

use std::fs::{self, File};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use kiln_agent::provision::{confined::Root, events::no_progress, extract, layer0};

fn sh(script: &str) -> Result<()> {
    let st = Command::new("sh").arg("-c").arg(script).status()?;
    if !st.success() {
        bail!("{script}: {st}");
    }
    Ok(())
}

fn drop_caches() {
    let _ = fs::write("/proc/sys/vm/drop_caches", "3");
}

/// Raw GPT disk image: partition content is a mix of zeros and pseudo-random text-like
/// bytes (compresses about 3:1, like a real root filesystem).
fn make_image(path: &Path, size: u64) -> Result<()> {
    let f = File::create(path)?;
    f.set_len(size)?;
    let mut w = BufWriter::with_capacity(4 << 20, f);
    w.seek(SeekFrom::Start(1 << 20))?;
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut block = vec![0u8; 1 << 20];
    for i in 1..(size >> 20) - 1 {
        if i % 4 == 3 {
            block.fill(0);
        } else {
            for b in block.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = b"etc/usr/lib/bin/share/the quick brown fox 0123456789\n"[(x % 53) as usize];
            }
        }
        w.write_all(&block)?;
    }
    let mut f = w.into_inner()?;
    let mut gpt = gptman::GPT::new_from(&mut f, 512, [7; 16])?;
    gpt[1] = gptman::GPTPartitionEntry {
        partition_type_guid: [1; 16],
        unique_partition_guid: [2; 16],
        starting_lba: 2048,
        ending_lba: gpt.header.last_usable_lba,
        attribute_bits: 0,
        partition_name: "root".into(),
    };
    gpt.write_into(&mut f)?;
    gptman::GPT::write_protective_mbr_into(&mut f, 512)?;
    f.sync_all()?;
    Ok(())
}

fn make_layer(path: &Path, files: usize) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut x: u64 = 1;
    for d in 0..(files / 100).max(1) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, format!("usr/share/d{d}/"), &[][..])?;
        for i in 0..100 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (x >> 40) as usize % 16384;
            let data: Vec<u8> = (0..len).map(|k| b"abcdefgh\n"[(k + i) % 9]).collect();
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(len as u64);
            b.append_data(&mut h, format!("usr/share/d{d}/f{i}"), &data[..])?;
        }
    }
    let tar = b.into_inner()?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar)?;
    let gz = gz.finish()?;
    fs::write(path, &gz)?;
    Ok(tar)
}

fn hex(b: &[u8]) -> String {
    kiln_oci::digest::Digest::of(b).hex().to_string()
}

fn write_layout(dir: &Path, tar: &[u8], gz: &[u8]) -> Result<()> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    let put = |b: &[u8]| -> Result<String> {
        let h = hex(b);
        fs::write(blobs.join(&h), b)?;
        Ok(h)
    };
    let lh = put(gz)?;
    let config = serde_json::to_vec(
        &serde_json::json!({"architecture":"amd64","os":"linux","config":{},
        "rootfs":{"type":"layers","diff_ids":[format!("sha256:{}", hex(tar))]}}),
    )?;
    let ch = put(&config)?;
    let man = serde_json::to_vec(
        &serde_json::json!({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":format!("sha256:{ch}"),"size":config.len()},
        "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":format!("sha256:{lh}"),"size":gz.len()}]}),
    )?;
    let mh = put(&man)?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(
            &serde_json::json!({"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "digest":format!("sha256:{mh}"),"size":man.len(),"annotations":{"org.opencontainers.image.ref.name":"bench"}}]}),
        )?,
    )?;
    Ok(())
}

fn main() -> Result<()> {
    let mib: u64 = std::env::var("KILN_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let files: usize = std::env::var("KILN_BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20000);
    let work = tempfile::tempdir_in("/var/tmp")?;
    let w = work.path();
    let raw = w.join("disk.raw");
    let blob = w.join("disk.raw.zst");
    eprintln!("building a {mib} MiB disk image and compressing it with zstd -3 ...");
    make_image(&raw, mib << 20)?;
    sh(&format!(
        "zstd -q -3 -T0 {} -o {}",
        raw.display(),
        blob.display()
    ))?;
    fs::remove_file(&raw)?;
    let disk = w.join("loopdisk");
    File::create(&disk)?.set_len((mib + 64) << 20)?;
    let out = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&disk)
        .output()?;
    let dev = String::from_utf8(out.stdout)?.trim().to_string();
    if dev.is_empty() {
        bail!("losetup failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let result = (|| -> Result<()> {
        let (mut best_k, mut best_b) = (f64::MAX, f64::MAX);
        for _ in 0..2 {
            drop_caches();
            let t = Instant::now();
            sh(&format!(
                "zstd -dc {} | dd of={dev} bs=4M iflag=fullblock oflag=direct status=none",
                blob.display()
            ))?;
            sh(&format!("sync {dev}"))?;
            best_b = best_b.min(t.elapsed().as_secs_f64());
            drop_caches();
            let t = Instant::now();
            layer0::write_layer0(File::open(&blob)?, Path::new(&dev), &no_progress)
                .context("kiln layer 0")?;
            best_k = best_k.min(t.elapsed().as_secs_f64());
        }
        let m = mib as f64;
        println!(
            "layer0 ({mib} MiB disk, zstd): kiln {:.2} s ({:.0} MiB/s)  zstd|dd oflag=direct {:.2} s ({:.0} MiB/s)  throughput ratio kiln/baseline {:.2}",
            best_k,
            m / best_k,
            best_b,
            m / best_b,
            best_b / best_k
        );
        Ok(())
    })();
    let _ = Command::new("losetup").args(["-d", &dev]).status();
    result?;

    eprintln!("building a {files}-file gzip layer ...");
    let gz_path = w.join("layer.tar.gz");
    let tar = make_layer(&gz_path, files)?;
    let gz = fs::read(&gz_path)?;
    let layout = w.join("image");
    write_layout(&layout, &tar, &gz)?;
    let (mut best_k, mut best_u) = (f64::MAX, f64::MAX);
    for i in 0..2 {
        let bundle = w.join(format!("bundle{i}"));
        drop_caches();
        let t = Instant::now();
        sh(&format!(
            "umoci unpack --image {}:bench {} >/dev/null",
            layout.display(),
            bundle.display()
        ))?;
        sh("sync")?;
        best_u = best_u.min(t.elapsed().as_secs_f64());
        let ours = w.join(format!("ours{i}"));
        fs::create_dir(&ours)?;
        drop_caches();
        let t = Instant::now();
        let root = Root::open(&ours)?;
        extract::extract_layer(
            File::open(&gz_path)?,
            &root,
            &extract::Options::default(),
            None,
            "bench",
            &no_progress,
        )?;
        sh("sync")?;
        best_k = best_k.min(t.elapsed().as_secs_f64());
    }
    println!(
        "extract ({files} files, {:.0} MiB tar, gzip): kiln {:.2} s  umoci unpack {:.2} s  time ratio kiln/umoci {:.2}",
        tar.len() as f64 / 1048576.0,
        best_k,
        best_u,
        best_k / best_u
    );
    Ok(())
}
