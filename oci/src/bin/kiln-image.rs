//! `kiln-image`: builds Kiln provisioning images (docs/image-format.md), pushes them or writes
//! an OCI layout; pulls and verifies images (for tests, benchmarks and debugging).

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use kiln_oci::builder::{BuildSpec, LayerCompression, build};
use kiln_oci::format::{Layer0Form, Platform, keys};
use kiln_oci::reference::Reference;
use kiln_oci::registry::{Client, ClientConfig, Credentials, HostConfig, Secret};

#[derive(Parser)]
#[command(version, about = "Build, push and pull Kiln provisioning images")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build an image from a raw disk (+ optional rootfs) into an OCI layout or a registry.
    Build(BuildArgs),
    /// Resolve an image and print its manifest digest, layers and Kiln settings as JSON.
    Inspect {
        /// Image reference.
        reference: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Push an image from an OCI layout directory (as `build --oci-dir` writes it).
    Push {
        /// OCI layout directory.
        #[arg(long)]
        oci_dir: PathBuf,
        /// Tag inside the layout (default: its only manifest).
        #[arg(long)]
        tag: Option<String>,
        /// Destination reference, e.g. 127.0.0.1:5000/kiln/debian:12.
        reference: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Pull every layer blob (verified) into a directory, or discard it (benchmarks).
    Pull {
        /// Image reference.
        reference: String,
        /// Directory receiving one file per layer, named by digest hex.
        #[arg(long, conflicts_with = "discard")]
        output_dir: Option<PathBuf>,
        /// Verify and throw the bytes away.
        #[arg(long)]
        discard: bool,
        /// Download the next layer while the current one is written.
        #[arg(long)]
        prefetch: bool,
        #[command(flatten)]
        registry: RegistryArgs,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Form {
    /// Kiln's raw-disk media type.
    Raw,
    /// A tar layer holding the one disk file.
    Tar,
}

#[derive(Clone, Copy, ValueEnum)]
enum LayerComp {
    Gzip,
    Zstd,
}

#[derive(Args)]
struct BuildArgs {
    /// Raw disk image (uncompressed: compressed with zstd here; or already zstd/gzip/xz).
    #[arg(long)]
    disk: PathBuf,
    /// Rootfs directory or tarball for layer 1.
    #[arg(long)]
    rootfs: Option<PathBuf>,
    /// Layer-0 form.
    #[arg(long, value_enum, default_value = "raw")]
    layer0_form: Form,
    /// Root partition: GPT name or number (default: DPS root type, else last).
    #[arg(long)]
    root_partition: Option<String>,
    /// Root filesystem: ext4, xfs, btrfs.
    #[arg(long)]
    root_fs: Option<String>,
    /// Root filesystem label.
    #[arg(long)]
    root_label: Option<String>,
    /// Extra kernel arguments.
    #[arg(long)]
    kernel_args: Option<String>,
    /// Rootfs layer compression.
    #[arg(long, value_enum, default_value = "gzip")]
    layer_compression: LayerComp,
    /// zstd level for the disk.
    #[arg(long, default_value_t = 6)]
    zstd_level: i32,
    /// Work directory for blob files (default: a directory next to the output).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Write an OCI layout here.
    #[arg(long, required_unless_present = "push")]
    oci_dir: Option<PathBuf>,
    /// Tag inside the OCI layout.
    #[arg(long, default_value = "latest")]
    tag: String,
    /// Push to this reference.
    #[arg(long)]
    push: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Args)]
struct RegistryArgs {
    /// Use plain HTTP for the registry (labs only).
    #[arg(long)]
    plain_http: bool,
    /// Extra CA certificates (PEM) for the registry.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Registry user name; the password is read from $KILN_REGISTRY_PASSWORD.
    #[arg(long)]
    username: Option<String>,
    /// Mirror (pull-through cache) to try first: host:port or http://host:port. Repeatable.
    #[arg(long)]
    mirror: Vec<String>,
}

impl RegistryArgs {
    fn client(&self, reference: &Reference) -> Result<Client> {
        let credentials = match &self.username {
            Some(u) => Some(Credentials {
                username: u.clone(),
                password: Secret::new(
                    std::env::var("KILN_REGISTRY_PASSWORD")
                        .context("--username needs $KILN_REGISTRY_PASSWORD")?,
                ),
            }),
            None => None,
        };
        let mut config = ClientConfig {
            proxy: kiln_oci::proxy::ProxyConfig::from_env(),
            ..Default::default()
        };
        config.proxy.validate()?;
        config.hosts.insert(
            reference.registry().to_owned(),
            HostConfig {
                plain_http: self.plain_http,
                ca_file: self.ca_file.clone(),
                credentials,
                mirrors: self.mirror.clone(),
            },
        );
        Ok(Client::new(config))
    }
}

fn parse_ref(s: &str) -> Result<Reference> {
    Ok(s.parse::<Reference>()?)
}

fn cmd_build(a: BuildArgs) -> Result<()> {
    let mut annotations = Vec::new();
    for (k, v) in [
        (keys::ROOT_PARTITION, &a.root_partition),
        (keys::ROOT_FILESYSTEM, &a.root_fs),
        (keys::ROOT_LABEL, &a.root_label),
        (keys::KERNEL_ARGS, &a.kernel_args),
    ] {
        if let Some(v) = v {
            annotations.push((k.to_owned(), v.clone()));
        }
    }
    let work_dir = match (&a.work_dir, &a.oci_dir) {
        (Some(w), _) => w.clone(),
        (None, Some(o)) => o.with_extension("work"),
        (None, None) => std::env::temp_dir().join(format!("kiln-image.{}", std::process::id())),
    };
    let spec = BuildSpec {
        disk: a.disk.clone(),
        layer0_form: match a.layer0_form {
            Form::Raw => Layer0Form::RawDisk,
            Form::Tar => Layer0Form::TarWithOneFile,
        },
        rootfs: a.rootfs.clone(),
        annotations,
        layer_compression: match a.layer_compression {
            LayerComp::Gzip => LayerCompression::Gzip,
            LayerComp::Zstd => LayerCompression::Zstd,
        },
        zstd_level: a.zstd_level,
        work_dir: work_dir.clone(),
    };
    let img = build(&spec)?;
    for l in &img.layers {
        eprintln!("layer {} {} bytes {}", l.digest, l.size, l.media_type);
    }
    if let Some(dir) = &a.oci_dir {
        let d = img.write_layout(dir, &a.tag)?;
        println!("{} {d}", dir.display());
    }
    if let Some(r) = &a.push {
        let reference = parse_ref(r)?;
        let d = img.push(&a.registry.client(&reference)?, &reference)?;
        println!("{reference} {d}");
    }
    if a.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    Ok(())
}

fn cmd_pull(
    reference: &str,
    output_dir: Option<PathBuf>,
    discard: bool,
    prefetch: bool,
    r: &RegistryArgs,
) -> Result<()> {
    if output_dir.is_none() && !discard {
        bail!("give --output-dir DIR or --discard");
    }
    let reference = parse_ref(reference)?;
    let client = r.client(&reference)?;
    let image = client.resolve(&reference, &Platform::current())?;
    let started = std::time::Instant::now();
    let mut total = 0u64;
    let open = |l: &kiln_oci::registry::Layer| -> Result<Box<dyn Read + Send>> {
        let blob = client
            .open_blob(&image.reference, &l.digest, l.size)?
            .on_event(|e| eprintln!("{e}"));
        Ok(if prefetch {
            Box::new(kiln_oci::prefetch::prefetch(blob, 1 << 20, 64))
        } else {
            Box::new(blob)
        })
    };
    let mut next = image.layers.first().map(open).transpose()?;
    for (i, l) in image.layers.iter().enumerate() {
        let mut cur = next.take().expect("opened");
        if prefetch {
            next = image.layers.get(i + 1).map(open).transpose()?;
        }
        let mut sink: Box<dyn Write> = match &output_dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                Box::new(std::io::BufWriter::with_capacity(
                    1 << 20,
                    std::fs::File::create(d.join(l.digest.hex()))?,
                ))
            }
            None => Box::new(std::io::sink()),
        };
        total += copy_large(&mut cur, &mut sink)
            .with_context(|| format!("pulling layer {i} of {}", image.reference))?;
        sink.flush()?;
        if !prefetch {
            next = image.layers.get(i + 1).map(open).transpose()?;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"reference": image.reference.to_string(), "bytes": total, "seconds": secs, "mib_per_s": total as f64 / 1048576.0 / secs})
    );
    Ok(())
}

/// `io::copy` with a 1 MiB buffer (fewer, larger reads from the socket and into sha256).
fn copy_large(r: &mut dyn Read, w: &mut dyn Write) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => {
                w.write_all(&buf[..n])?;
                total += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Build(a) => cmd_build(a),
        Command::Inspect {
            reference,
            registry,
        } => {
            let reference = parse_ref(&reference)?;
            let image = registry
                .client(&reference)?
                .resolve(&reference, &Platform::current())?;
            let layers: Vec<_> = image
                .layers
                .iter()
                .map(|l| serde_json::json!({"digest": l.digest.as_str(), "size": l.size, "mediaType": l.media_type}))
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "reference": image.reference.to_string(),
                    "layer0": image.layer0,
                    "settings": image.settings,
                    "layers": layers,
                }))?
            );
            Ok(())
        }
        Command::Push {
            oci_dir,
            tag,
            reference,
            registry,
        } => {
            let image = kiln_oci::layout::read_image(&oci_dir, tag.as_deref())?;
            let reference = parse_ref(&reference)?;
            let d = image
                .push(&registry.client(&reference)?, &reference)
                .with_context(|| format!("pushing {} to {reference}", oci_dir.display()))?;
            println!("{reference} {d}");
            Ok(())
        }
        Command::Pull {
            reference,
            output_dir,
            discard,
            prefetch,
            registry,
        } => cmd_pull(&reference, output_dir, discard, prefetch, &registry),
    }
}
