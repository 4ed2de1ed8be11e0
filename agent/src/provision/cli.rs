//! `kiln-agent provision ...`: a provisioning order run by hand (development, or a loop
//! device on a workstation). Writing needs `--yes-really-wipe DEVICE` naming exactly the
//! disk the hints chose; without it the command only shows the choice.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use kiln_oci::builder::BlobFile;
use kiln_oci::format::ImageSettings;
use kiln_oci::layout;

use super::cloudinit::Seed;
use super::disk::Disk;
use super::driver;
use super::events::{Event, Phase};
use super::gpt::RootChoice;
use super::inject::{AgentConfig, InjectSpec};
use super::rootfs::FsType;
use super::run::{LayerInput, provision};
use super::select::describe;
use super::source::{self, Sink};

const USAGE: &str = "\
usage: kiln-agent provision (--image REF [--insecure-registry HOST:PORT]... |
                             --image-file OCI_LAYOUT_DIR | --layer0 FILE [--layer FILE]...)
                            --disk HINTS [--yes-really-wipe DEVICE]
         [--root-partition NUMBER|NAME] [--fs ext4|xfs|btrfs] [--fs-label L] [--fs-uuid U]
         [--instance-id ID [--hostname H] [--user-data FILE] [--network-config FILE]]
         [--control-plane URL --machine-id ID --credential-file FILE [--ca-pin HEX]]
         [--extra-args 'ARGS'] [--mount DIR] [--stage DIR] [--json] [--kexec]
HINTS: serial=...,wwn=...,model=...,vendor=...,by-path=...,by-id=...,name=...,
       size>=100G,size<=2T,rotational=0|1,transport=nvme|virtio|ata|sas|usb|scsi|loop (ANDed)
With --image, root partition, filesystem, label and extra kernel arguments come from the
image's annotations/labels; the flags override them. --insecure-registry: plain HTTP (labs).
Without --yes-really-wipe the chosen disk is shown and nothing is written.
--kexec: boot the installed system with kexec once provisioning succeeded.";

#[derive(Default)]
struct Args {
    image: Option<String>,
    insecure: Vec<String>,
    image_file: Option<PathBuf>,
    layer0: Option<PathBuf>,
    layers: Vec<PathBuf>,
    disk: Option<String>,
    confirm: Option<String>,
    root: Option<String>,
    fs: Option<String>,
    fs_label: Option<String>,
    fs_uuid: Option<String>,
    instance_id: Option<String>,
    hostname: Option<String>,
    user_data: Option<PathBuf>,
    network_config: Option<PathBuf>,
    control_plane: Option<String>,
    machine_id: Option<String>,
    credential_file: Option<PathBuf>,
    ca_pin: Option<String>,
    extra_args: Option<String>,
    mount: Option<PathBuf>,
    stage: Option<PathBuf>,
    json: bool,
    kexec: bool,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut a = Args::default();
    let mut it = args.iter();
    while let Some(k) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .with_context(|| format!("{k} needs a value\n{USAGE}"))
        };
        match k.as_str() {
            "--image" => a.image = Some(val()?),
            "--insecure-registry" => a.insecure.push(val()?),
            "--image-file" => a.image_file = Some(val()?.into()),
            "--layer0" => a.layer0 = Some(val()?.into()),
            "--layer" => a.layers.push(val()?.into()),
            "--disk" => a.disk = Some(val()?),
            "--yes-really-wipe" => a.confirm = Some(val()?),
            "--root-partition" => a.root = Some(val()?),
            "--fs" => a.fs = Some(val()?),
            "--fs-label" => a.fs_label = Some(val()?),
            "--fs-uuid" => a.fs_uuid = Some(val()?),
            "--instance-id" => a.instance_id = Some(val()?),
            "--hostname" => a.hostname = Some(val()?),
            "--user-data" => a.user_data = Some(val()?.into()),
            "--network-config" => a.network_config = Some(val()?.into()),
            "--control-plane" => a.control_plane = Some(val()?),
            "--machine-id" => a.machine_id = Some(val()?),
            "--credential-file" => a.credential_file = Some(val()?.into()),
            "--ca-pin" => a.ca_pin = Some(val()?),
            "--extra-args" => a.extra_args = Some(val()?),
            "--mount" => a.mount = Some(val()?.into()),
            "--stage" => a.stage = Some(val()?.into()),
            "--json" => a.json = true,
            "--kexec" => a.kexec = true,
            "-h" | "--help" => bail!("{USAGE}"),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let sources = usize::from(a.image.is_some())
        + usize::from(a.image_file.is_some())
        + usize::from(a.layer0.is_some());
    if sources != 1 {
        bail!("give exactly one of --image, --image-file and --layer0\n{USAGE}");
    }
    if !a.insecure.is_empty() && a.image.is_none() {
        bail!("--insecure-registry goes with --image");
    }
    if a.layer0.is_none() && !a.layers.is_empty() {
        bail!("--layer goes with --layer0, not --image or --image-file");
    }
    if a.disk.is_none() {
        bail!("--disk HINTS is required (e.g. --disk name=loop0 or --disk serial=ABC)\n{USAGE}");
    }
    Ok(a)
}

fn read_text(p: &Path) -> Result<String> {
    std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
}

/// Layer 0 and the layers after it.
type Layers = (LayerInput, Box<dyn Iterator<Item = Result<LayerInput>>>);

/// Where the layers come from, and the defaults the image gives.
struct Source {
    /// A stream of layer 0 from its start, for the GPT peek before the disk is chosen.
    peek: Box<dyn Read + Send>,
    /// Image settings (annotations/labels); defaults when the source has none.
    settings: ImageSettings,
    /// Opens the layer streams; called only once the disk is confirmed.
    open: Box<dyn FnOnce() -> Result<Layers>>,
}

fn open_source(a: &Args, sink: &Sink) -> Result<Source> {
    if let Some(reference) = &a.image {
        let client = source::client(&a.insecure);
        let image = source::resolve(&client, reference)?;
        sink(Event::msg(
            Phase::Inventory,
            format!(
                "image {}: {} layers, layer 0 {}, root {}, {}{}{}",
                image.reference,
                image.layers.len(),
                driver::layer0_form(&image.layer0),
                driver::root_partition(&image.settings.root_partition),
                image.settings.filesystem,
                image
                    .settings
                    .label
                    .as_deref()
                    .map(|l| format!(" label \"{l}\""))
                    .unwrap_or_default(),
                image
                    .settings
                    .kernel_args
                    .as_deref()
                    .map(|k| format!(", kernel args '{k}'"))
                    .unwrap_or_default(),
            ),
        ));
        let peek = source::peek_layer0(&client, &image)?;
        let settings = image.settings.clone();
        let sink = sink.clone();
        return Ok(Source {
            peek,
            settings,
            open: Box::new(move || {
                let (layer0, rest) = source::layers(&client, &image, sink)?;
                Ok((layer0, Box::new(rest) as Box<dyn Iterator<Item = _>>))
            }),
        });
    }
    let (layer0, rest, peek): (LayerInput, Vec<LayerInput>, Box<dyn Read + Send>) =
        match (&a.image_file, &a.layer0) {
            (Some(dir), _) => {
                // kiln-oci's layout reader: linux/amd64 (or the first image), blobs
                // size-checked, each streamed through its verifying reader.
                let image = layout::read_platform_image(dir, "linux", "amd64")?;
                let (first, others) = image
                    .layers
                    .split_first()
                    .with_context(|| format!("{} has no layers", dir.display()))?;
                let open = |b: &BlobFile| -> Result<LayerInput> {
                    Ok(LayerInput {
                        reader: Box::new(layout::open_blob(dir, &b.digest)?),
                        size: Some(b.size),
                        label: b.digest.to_string(),
                    })
                };
                let peek = Box::new(File::open(layout::blob_path(dir, &first.digest))?);
                (
                    open(first)?,
                    others.iter().map(open).collect::<Result<_>>()?,
                    peek,
                )
            }
            (None, Some(f)) => {
                let open = |p: &PathBuf| -> Result<LayerInput> {
                    let file = File::open(p).with_context(|| format!("opening {}", p.display()))?;
                    let size = file.metadata().ok().map(|m| m.len());
                    Ok(LayerInput {
                        reader: Box::new(file),
                        size,
                        label: p.display().to_string(),
                    })
                };
                let peek =
                    Box::new(File::open(f).with_context(|| format!("opening {}", f.display()))?);
                (
                    open(f)?,
                    a.layers.iter().map(open).collect::<Result<_>>()?,
                    peek,
                )
            }
            _ => unreachable!("checked in parse"),
        };
    Ok(Source {
        peek,
        settings: ImageSettings::default(),
        open: Box::new(move || Ok((layer0, Box::new(rest.into_iter().map(Ok)) as Box<_>))),
    })
}

/// Entry point of `kiln-agent provision ...`.
pub fn cli(args: &[String]) -> Result<()> {
    let a = parse(args)?;
    let sink = console_sink(a.json);
    let progress = |e: Event| sink(e);
    let Source {
        peek,
        settings,
        open,
    } = open_source(&a, &sink)?;
    let what = match (&a.image, &a.image_file, &a.layer0) {
        (Some(r), _, _) => r.clone(),
        (_, Some(p), _) | (_, _, Some(p)) => p.display().to_string(),
        _ => unreachable!("checked in parse"),
    };
    let disk = driver::choose_disk(peek, &what, a.disk.as_deref().unwrap_or(""), &progress)?;
    if !confirmed(&a, &disk)? {
        return Ok(());
    }
    let tmp = std::env::temp_dir().join(format!("kiln-provision-{}", std::process::id()));
    let mut order = driver::order(
        &disk.path,
        &settings,
        overrides(&a)?,
        seed(&a)?,
        inject(&a)?,
        &tmp,
    );
    if let Some(m) = &a.mount {
        order.mountpoint = m.clone();
    }
    if let Some(s) = &a.stage {
        order.stage = s.clone();
    }
    let (l0, mut rest) = open()?;
    let out = provision(&order, l0, &mut rest, &progress)?;
    summary(&out, a.json)?;
    if a.kexec {
        let report = |e: crate::events::Event| eprintln!("{e}");
        let image = crate::kexec::Image::from(&out.plan);
        return crate::kexec::boot(&image, &report)
            .map(|never| match never {})
            .context("provisioning succeeded, but booting the installed system failed");
    }
    Ok(())
}

/// Engine events as lines on stderr, or with `--json` as the versioned records every
/// other event stream carries, one per line on stdout.
fn console_sink(json: bool) -> Sink {
    let reporter = Arc::new(crate::events::Reporter::new());
    reporter.add_sink(Box::new(crate::ui::plain::JsonSink::new(Box::new(
        std::io::stdout(),
    ))));
    Arc::new(move |e: Event| {
        if json {
            reporter.emit(crate::events::Event::Provision { detail: e });
        } else {
            eprintln!("{e}");
        }
    })
}

/// Whether to write: only with `--yes-really-wipe` naming exactly the chosen disk.
fn confirmed(a: &Args, disk: &Disk) -> Result<bool> {
    let dev = disk.path.display().to_string();
    match &a.confirm {
        None => {
            eprintln!(
                "\nDry run: would ERASE {dev} ({}). Re-run with --yes-really-wipe {dev} to write it.",
                describe(disk)
            );
            Ok(false)
        }
        Some(c) if c.trim_start_matches("/dev/") != disk.name => bail!(
            "--yes-really-wipe names {c} but the hints chose {dev}: refusing; nothing was written"
        ),
        Some(_) => {
            eprintln!("\n!!! ERASING {dev} ({}) NOW !!!\n", describe(disk));
            Ok(true)
        }
    }
}

/// The flags that override the image's settings.
fn overrides(a: &Args) -> Result<driver::Overrides> {
    Ok(driver::Overrides {
        root: a.root.as_deref().map(|s| {
            s.parse()
                .map(RootChoice::Number)
                .unwrap_or_else(|_| RootChoice::Name(s.to_string()))
        }),
        fstype: a.fs.as_deref().map(FsType::parse).transpose()?,
        label: a.fs_label.clone(),
        fs_uuid: a.fs_uuid.clone(),
        kernel_args: a.extra_args.clone(),
    })
}

/// The NoCloud seed, with `--instance-id`.
fn seed(a: &Args) -> Result<Option<Seed>> {
    let Some(id) = &a.instance_id else {
        return Ok(None);
    };
    Ok(Some(Seed {
        instance_id: id.clone(),
        hostname: a.hostname.clone(),
        user_data: a
            .user_data
            .as_deref()
            .map(read_text)
            .transpose()?
            .unwrap_or_else(|| "#cloud-config\n{}\n".into()),
        network_config: a.network_config.as_deref().map(read_text).transpose()?,
        vendor_data: None,
    }))
}

/// This agent injected, with `--control-plane`.
fn inject(a: &Args) -> Result<Option<InjectSpec>> {
    let Some(url) = &a.control_plane else {
        return Ok(None);
    };
    let credential = a
        .credential_file
        .as_deref()
        .context("--control-plane needs --credential-file")?;
    Ok(Some(InjectSpec {
        binary: PathBuf::from("/proc/self/exe"),
        config: AgentConfig {
            url: url.clone(),
            ca_pin: a.ca_pin.clone(),
            machine_id: a
                .machine_id
                .clone()
                .context("--control-plane needs --machine-id")?,
            credential: read_text(credential)?.trim().to_string(),
            ..AgentConfig::default()
        },
        args: vec!["serve".into()],
    }))
}

/// The result: one JSON object with `--json`, else one line.
fn summary(out: &super::run::Outcome, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(out)?);
        return Ok(());
    }
    let initrd = out
        .plan
        .initrd
        .as_deref()
        .map_or("(no initrd)".to_string(), |i| {
            format!("initrd {}", i.display())
        });
    eprintln!(
        "done: {} written ({:.1} s), root partition {} PARTUUID {}, {} layers; kexec {} {} '{}'",
        super::events::human_bytes(out.layer0.bytes),
        out.layer0.seconds,
        out.partition.number,
        out.partition.partuuid,
        out.layers.len(),
        out.plan.kernel.display(),
        initrd,
        crate::cmdline::redact(&out.plan.cmdline)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn argument_errors() {
        for (args, want) in [
            (
                s(&["--disk", "name=loop0"]),
                "exactly one of --image, --image-file and --layer0",
            ),
            (
                s(&["--layer0", "a", "--image-file", "b", "--disk", "x=1"]),
                "exactly one",
            ),
            (s(&["--layer0", "a"]), "--disk HINTS is required"),
            (s(&["--layer0"]), "--layer0 needs a value"),
            (s(&["--bogus"]), "unknown argument"),
            (
                s(&["--image-file", "d", "--layer", "x", "--disk", "name=a"]),
                "--layer goes with --layer0",
            ),
            (
                s(&["--image", "r/x", "--layer", "x", "--disk", "name=a"]),
                "--layer goes with --layer0",
            ),
            (
                s(&["--image", "r/x", "--image-file", "d", "--disk", "name=a"]),
                "exactly one",
            ),
            (
                s(&[
                    "--layer0",
                    "a",
                    "--insecure-registry",
                    "h:5000",
                    "--disk",
                    "name=a",
                ]),
                "--insecure-registry goes with --image",
            ),
        ] {
            let e = parse(&args)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(want), "{args:?}: {e}");
        }
        let a = parse(&s(&[
            "--layer0",
            "l0",
            "--layer",
            "l1",
            "--layer",
            "l2",
            "--disk",
            "name=loop3",
            "--yes-really-wipe",
            "/dev/loop3",
        ]))
        .unwrap();
        assert_eq!(a.layers.len(), 2);
        assert_eq!(a.confirm.as_deref(), Some("/dev/loop3"));
        let a = parse(&s(&[
            "--image",
            "10.0.2.100:5000/kiln/test:latest",
            "--insecure-registry",
            "10.0.2.100:5000",
            "--disk",
            "serial=KILN-NVME-1",
        ]))
        .unwrap();
        assert_eq!(a.image.as_deref(), Some("10.0.2.100:5000/kiln/test:latest"));
        assert_eq!(a.insecure, ["10.0.2.100:5000"]);
    }
}
