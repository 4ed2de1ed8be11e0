//! The seam to the kexec code: booting the installed system from the installer, after a
//! provisioning run (with the run's [`BootPlan`]) or for a `boot_installed_system` order
//! (without one: the implementation finds the installed system itself).
//!
//! [`Kexec`] is the implementation ([`crate::kexec`]); [`NoKexec`] is for tests and for
//! systems where the installed system cannot be booted from here: it fails with a clear
//! error, the order is left unacknowledged, and after provisioning PID 1 reboots instead.

use std::path::Path;
use std::sync::Arc;

use crate::events::Reporter;
use crate::kexec::{self, Image, installed};
use crate::provision::bootplan::BootPlan;

/// Boots the installed system.
pub trait BootInstalled: Send + Sync {
    /// Loads the installed system's kernel (`plan`, or found on disk when `None`), calls
    /// `before_exec` (which acknowledges the order) once nothing can fail any more, then
    /// jumps into it. Returns only on failure, before `before_exec` was called when the
    /// kernel could not be loaded.
    fn boot(&self, plan: Option<&BootPlan>, before_exec: &mut dyn FnMut()) -> anyhow::Error;
}

/// No kexec in this build.
pub struct NoKexec;

impl BootInstalled for NoKexec {
    fn boot(&self, _: Option<&BootPlan>, _: &mut dyn FnMut()) -> anyhow::Error {
        anyhow::anyhow!(
            "kexec not available in this build: cannot boot the installed system from the installer"
        )
    }
}

/// Boots the installed system with kexec: the run's plan, or (for a
/// `boot_installed_system` order) the installed system found on the disks `hints` allow.
pub struct Kexec {
    pub reporter: Arc<Reporter>,
    /// Root-device hints (`kiln.disk=`), `None` for every disk.
    pub hints: Option<String>,
}

impl BootInstalled for Kexec {
    fn boot(&self, plan: Option<&BootPlan>, before_exec: &mut dyn FnMut()) -> anyhow::Error {
        let reporter = self.reporter.clone();
        let report = move |e| reporter.emit(e);
        let plan = match plan {
            Some(p) => {
                let mut p = p.clone();
                let running = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
                p.cmdline = kexec::carry_consoles(&p.cmdline, &running);
                p
            }
            None => match installed::plan_installed(
                self.hints.as_deref(),
                Path::new(installed::STAGE),
                &report,
            ) {
                Ok(p) => p,
                Err(e) => return e.context("finding the installed system to boot"),
            },
        };
        let img = Image::from(&plan);
        if let Err(e) = kexec::load(&img) {
            return e;
        }
        before_exec();
        match kexec::exec_loaded(&img, &report) {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }
}
