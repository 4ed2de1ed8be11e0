//! The phases chained for one provisioning order. Callers (the control-plane order
//! handler, the hand-run CLI) supply the chosen disk and the verified layer streams.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::bootplan::{BootPlan, boot_plan};
use super::cloudinit::{Seed, write_seed};
use super::confined::Root;
use super::events::{Event, Phase, Progress};
use super::extract::{LayerReport, Options, extract_layer};
use super::gpt::{GrowReport, RootChoice, grow_root};
use super::inject::{InjectSpec, inject_agent};
use super::layer0::{Layer0Report, Target, wipe_partition_tables, write_layer0};
use super::rootfs::{FsSpec, RootFsReport, prepare, unmount};

/// One verified layer stream.
pub struct LayerInput {
    /// The stream (EOF only after its digest verified).
    pub reader: Box<dyn Read + Send>,
    /// Its size when known.
    pub size: Option<u64>,
    /// Name for messages (the digest).
    pub label: String,
}

/// Read-ahead per layer: chunks of 1 MiB.
pub const PREFETCH_CHUNKS: usize = 16;

/// Starts reading `l` on its own thread into a bounded queue (kiln-oci's prefetcher, at
/// most [`PREFETCH_CHUNKS`] MiB in memory), so download and extraction overlap. Errors,
/// including the digest verdict at EOF, pass through unchanged.
pub fn prefetch(l: LayerInput) -> LayerInput {
    LayerInput {
        reader: Box::new(kiln_oci::prefetch::prefetch(
            l.reader,
            1 << 20,
            PREFETCH_CHUNKS,
        )),
        size: l.size,
        label: l.label,
    }
}

/// What to do.
#[derive(Debug, Clone)]
pub struct Order {
    /// Target disk (already chosen and confirmed).
    pub disk: PathBuf,
    /// Root partition.
    pub root: RootChoice,
    /// Root filesystem.
    pub fs: FsSpec,
    /// Cloud-init seed.
    pub seed: Option<Seed>,
    /// Agent injection.
    pub inject: Option<InjectSpec>,
    /// Extra kernel arguments from the image.
    pub extra_args: Vec<String>,
    /// Where to mount the root.
    pub mountpoint: PathBuf,
    /// Where to stage kernel and initrd.
    pub stage: PathBuf,
    /// Extraction options.
    pub extract: Options,
}

/// Everything the phases reported.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    /// Phase 2.
    pub layer0: Layer0Report,
    /// Phase 3.
    pub partition: GrowReport,
    /// Phase 4.
    pub rootfs: RootFsReport,
    /// Phase 5.
    pub layers: Vec<LayerReport>,
    /// Phase 8.
    pub plan: BootPlan,
}

/// Runs phases 2–8. A failure after layer 0 was written unmounts the root and wipes the
/// partition tables, so a half-provisioned disk never boots.
pub fn provision(
    order: &Order,
    layer0: LayerInput,
    layers: &mut dyn Iterator<Item = Result<LayerInput>>,
    progress: Progress,
) -> Result<Outcome> {
    let l0 = write_layer0(layer0.reader, &order.disk, progress)?;
    let mut mounted = false;
    let r = after_layer0(order, &l0, layers, &mut mounted, progress);
    match r {
        Ok(x) => Ok(x),
        Err(e) => {
            if mounted {
                let _ = unmount(&order.mountpoint);
            }
            let wiped = Target::open(&order.disk)
                .and_then(|mut t| wipe_partition_tables(&mut t, &[l0.geometry]).context("wiping"));
            match wiped {
                Ok(()) => {
                    progress(Event::msg(
                        Phase::Layer0,
                        format!("wiped partition tables on {}", order.disk.display()),
                    ));
                    Err(e.context(format!(
                        "provisioning {} failed; its partition tables were wiped",
                        order.disk.display()
                    )))
                }
                Err(w) => Err(e.context(format!(
                    "provisioning {} failed and wiping its partition tables failed too ({w:#})",
                    order.disk.display()
                ))),
            }
        }
    }
}

fn after_layer0(
    order: &Order,
    l0: &Layer0Report,
    layers: &mut dyn Iterator<Item = Result<LayerInput>>,
    mounted: &mut bool,
    progress: Progress,
) -> Result<Outcome> {
    let part = grow_root(&order.disk, &order.root, progress)?;
    let node = part.node.clone().with_context(|| {
        format!(
            "{} is not a block device: cannot make a filesystem on its partition",
            order.disk.display()
        )
    })?;
    let fs = prepare(&node, &order.fs, &order.mountpoint, progress)?;
    *mounted = true;
    let root = Root::open(&order.mountpoint)?;
    let mut reports = Vec::new();
    // The next layer starts downloading (bounded read-ahead) while the current one extracts.
    let mut open_next = |i: usize| -> Result<Option<LayerInput>> {
        layers
            .next()
            .transpose()
            .with_context(|| format!("opening layer {i}"))
            .map(|o| o.map(prefetch))
    };
    let mut next = open_next(1)?;
    let mut i = 1;
    while let Some(l) = next.take() {
        next = open_next(i + 1)?;
        reports.push(extract_layer(
            l.reader,
            &root,
            &order.extract,
            l.size,
            &l.label,
            progress,
        )?);
        i += 1;
    }
    if let Some(seed) = &order.seed {
        write_seed(&root, seed, progress)?;
    }
    if let Some(spec) = &order.inject {
        inject_agent(&root, spec, progress)?;
    }
    if !order.extra_args.is_empty() {
        // For a later boot of this disk from the installer (kexec::installed).
        let p = super::confined::RelPath::of(crate::kexec::installed::KERNEL_ARGS_PATH)?;
        root.mkdir_all(&super::confined::RelPath::of("etc/kiln")?, 0o755)?;
        root.write_file(
            &p,
            format!("{}\n", order.extra_args.join(" ")).as_bytes(),
            0o644,
            None,
        )
        .with_context(|| format!("recording the kernel arguments in {p}"))?;
    }
    let plan = boot_plan(
        &root,
        &part.partuuid,
        &order.extra_args,
        &order.stage,
        progress,
    )?;
    drop(root);
    unmount(&order.mountpoint)?;
    *mounted = false;
    Ok(Outcome {
        layer0: l0.clone(),
        partition: part,
        rootfs: fs,
        layers: reports,
        plan,
    })
}

#[cfg(test)]
mod tests {
    use std::io::{self, Read};

    use super::*;

    struct Src {
        data: Vec<u8>,
        pos: usize,
        fail_at_eof: bool,
    }
    impl Read for Src {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            if self.pos == self.data.len() {
                if self.fail_at_eof {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "digest mismatch",
                    ));
                }
                return Ok(0);
            }
            let n = b.len().min(self.data.len() - self.pos).min(1000);
            b[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    #[test]
    fn prefetch_passes_bytes_and_verdicts() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
        for fail in [false, true] {
            let l = LayerInput {
                reader: Box::new(Src {
                    data: data.clone(),
                    pos: 0,
                    fail_at_eof: fail,
                }),
                size: None,
                label: "x".into(),
            };
            let mut p = prefetch(l);
            let mut out = Vec::new();
            let r = p.reader.read_to_end(&mut out);
            assert_eq!(r.is_err(), fail);
            assert_eq!(out, data);
        }
    }
}
