//! The provisioning engine, as typed phases (one function each, each with its own error
//! context and [`events::Event`]s):
//!
//! 1. [`Phase::Inventory`]: [`disk::inventory`] + [`select::choose`] — sysfs inventory,
//!    `kiln.disk=` hints, refusal listing every disk.
//! 2. [`Phase::Layer0`]: [`layer0::write_layer0`] — decompress by magic (kiln-oci's
//!    [`kiln_oci::compression::Decompressor`]), threaded writer,
//!    first MiB held back until verified EOF, partition tables wiped on failure.
//! 3. [`Phase::Partition`]: [`gpt::grow_root`] — backup GPT to the end, root partition
//!    grown, table re-read ([`blockdev`]).
//! 4. [`Phase::RootFs`]: [`rootfs::prepare`] — grow or create the root filesystem, mount.
//! 5. [`Phase::Extract`]: [`extract::extract_layer`] — OCI layers with whiteouts, confined
//!    to the root with `openat2(RESOLVE_IN_ROOT)`.
//! 6. [`Phase::CloudInit`]: [`cloudinit::write_seed`] — NoCloud seed.
//! 7. [`Phase::Inject`]: [`inject::inject_agent`] — agent binary, config, service.
//! 8. [`Phase::BootPlan`]: [`bootplan::boot_plan`] — kernel, initrd, cmdline for kexec.
//!
//! [`driver`] chooses the disk and builds the order for both callers: [`cli`] (by hand,
//! against a loop device or a spare disk) and the control-plane session.

pub mod blockdev;
pub mod bootplan;
mod cli;
pub mod cloudinit;
pub mod confined;
pub mod disk;
pub mod driver;
pub mod events;
pub mod extract;
pub mod gpt;
pub mod inject;
pub mod layer0;
pub mod rootfs;
pub mod run;
pub mod select;
pub mod source;

pub use events::{Event, Phase, Progress};

pub use cli::cli;
