//! The seam to the kexec code: booting the installed system from the installer, after a
//! provisioning run (with the run's [`BootPlan`]) or for a `boot_installed_system` order
//! (without one: the implementation finds the installed system itself).
//!
//! This build has no kexec implementation: [`NoKexec`] fails with a clear error, the order
//! is left unacknowledged, and after provisioning PID 1 reboots instead.

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
