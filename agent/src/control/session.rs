//! One connection to the control plane: register (or reuse the saved identity), heartbeat
//! on a thread at the interval the server asks for, long-poll for orders and carry them out
//! one at a time. A `401` anywhere means the credential was revoked or rotated away: the
//! identity is dropped and the agent registers again.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Result;
use kiln_protocol::{EventBatch, Heartbeat, Order, ProvisionOrder, RunEvent, SequencedEvent};
use uuid::Uuid;

use super::api::{Api, CallError, LONG_POLL_SECS};
use super::boot::BootInstalled;
use super::config::{Config, Identity};
use super::provisioning::{self, RunOutcome};
use super::register;
use crate::events::{Event, Level, PowerAction, Reporter};

/// Reboots the machine; returns only on failure.
pub type Reboot = Arc<dyn Fn(&str) -> anyhow::Error + Send + Sync>;

/// What the session may do to the machine, supplied by where it runs.
pub struct Hooks {
    /// kexec into the installed system (the seam to the kexec code).
    pub boot: Arc<dyn BootInstalled>,
    /// Reboot for `reboot` orders, and after provisioning when kexec fails (PID 1).
    pub reboot: Reboot,
    /// After a completed run: boot the installed system (PID 1) or go on serving (a daemon,
    /// tests).
    pub boot_after_provision: bool,
    /// Provision orders boot the installer instead (an installed system cannot write the
    /// disk it runs from): the installed system's daemon.
    pub provision_via_installer: bool,
    /// Pause between approval claims.
    pub claim_poll: Duration,
    /// Source of the inventory sent at registration.
    pub inventory: Arc<dyn Fn() -> kiln_protocol::Inventory + Send + Sync>,
    /// Return after this many orders were carried out (tests); `None`: serve forever.
    pub max_orders: Option<usize>,
}

impl Hooks {
    /// PID 1 of the installer: the init power path reboots.
    pub fn installer(reporter: Arc<Reporter>, boot: Arc<dyn BootInstalled>) -> Hooks {
        Hooks {
            boot,
            reboot: Arc::new(move |why| {
                crate::init::power::act(&reporter, PowerAction::Reboot, why).into()
            }),
            boot_after_provision: true,
            provision_via_installer: false,
            claim_poll: Duration::from_secs(3),
            inventory: Arc::new(super::inventory::collect),
            max_orders: None,
        }
    }

    /// A daemon on an installed system: `reboot` orders run the system's `reboot`.
    pub fn daemon(boot: Arc<dyn BootInstalled>) -> Hooks {
        Hooks {
            boot,
            reboot: Arc::new(|why| match std::process::Command::new("reboot").status() {
                Ok(s) if s.success() => {
                    std::thread::sleep(Duration::from_secs(300));
                    anyhow::anyhow!("reboot ({why}) did not happen within 5 minutes")
                }
                Ok(s) => anyhow::anyhow!("reboot ({why}): the reboot command failed: {s}"),
                Err(e) => anyhow::anyhow!("reboot ({why}): running reboot: {e}"),
            }),
            boot_after_provision: false,
            provision_via_installer: true,
            claim_poll: Duration::from_secs(3),
            inventory: Arc::new(super::inventory::collect),
            max_orders: None,
        }
    }
}

/// Serves the control plane until an error other than a refused credential.
pub fn serve(
    cfg: &mut Config,
    api: Arc<dyn Api>,
    reporter: Arc<Reporter>,
    hooks: &Hooks,
) -> Result<()> {
    let mut done = 0usize;
    loop {
        let id = register::ensure(
            cfg,
            api.as_ref(),
            &reporter,
            hooks.inventory.as_ref(),
            hooks.claim_poll,
        )?;
        let _heartbeat = Heartbeats::start(api.clone(), id.clone(), cfg, reporter.clone());
        match orders(cfg, &id, api.clone(), reporter.clone(), hooks, &mut done) {
            Ok(()) => return Ok(()),
            Err(e)
                if e.downcast_ref::<CallError>()
                    .is_some_and(CallError::is_unauthorized) =>
            {
                reporter.emit(Event::Message {
                    level: Level::Warn,
                    text: format!("{e:#}; registering again"),
                });
                cfg.identity = None;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Heartbeats from a thread; stops when dropped.
struct Heartbeats {
    stop: Option<mpsc::Sender<()>>,
}

impl Heartbeats {
    fn start(api: Arc<dyn Api>, id: Identity, cfg: &Config, reporter: Arc<Reporter>) -> Self {
        let (tx, rx) = mpsc::channel::<()>();
        let hb = Heartbeat {
            environment: cfg.environment,
            agent_version: Some(crate::VERSION.into()),
        };
        let _ = std::thread::Builder::new()
            .name("heartbeat".into())
            .spawn(move || {
                loop {
                    let pause = match api.heartbeat(&id, &hb) {
                        Ok(r) => Duration::from_secs(r.interval_secs.clamp(1, 3600)),
                        // The orders loop sees the 401 too and registers again.
                        Err(e) if e.is_unauthorized() => return,
                        Err(e) => {
                            reporter.emit(Event::Message {
                                level: Level::Warn,
                                text: format!("heartbeat: {e}"),
                            });
                            Duration::from_secs(10)
                        }
                    };
                    if !matches!(rx.recv_timeout(pause), Err(mpsc::RecvTimeoutError::Timeout)) {
                        return;
                    }
                }
            });
        Heartbeats { stop: Some(tx) }
    }
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        drop(self.stop.take());
    }
}

/// From an installed system: downloads the installer from the control plane and kexecs
/// into it with this machine's identity. Returns only on failure.
fn reinstall(
    cfg: &Config,
    p: &ProvisionOrder,
    api: &dyn Api,
    reporter: &Arc<Reporter>,
) -> anyhow::Error {
    reporter.emit(Event::info(format!(
        "re-provisioning (run {}): booting the installer from {}/artifacts/vmlinuz",
        p.run_id, cfg.server
    )));
    let dest = cfg.work_dir.join("kiln-installer.vmlinuz");
    if let Err(e) = std::fs::create_dir_all(&cfg.work_dir) {
        return anyhow::anyhow!("creating {}: {e}", cfg.work_dir.display());
    }
    if let Err(e) = api.download_artifact("vmlinuz", &dest) {
        return anyhow::Error::new(e).context("downloading the installer to re-provision");
    }
    let src = crate::kexec::installer::InstallerSource {
        location: dest.display().to_string(),
        sha256: None,
    };
    let report = |e| reporter.emit(e);
    match crate::kexec::installer::to_installer(&src, &cfg.state_file, &[], &report) {
        Ok(never) => match never {},
        Err(e) => e.context("booting the installer to re-provision"),
    }
}

/// Reports a run as failed with `e` (one event after the server's acknowledged ones).
fn fail_run(
    id: &Identity,
    p: &ProvisionOrder,
    api: &dyn Api,
    reporter: &Arc<Reporter>,
    e: &anyhow::Error,
) {
    reporter.emit(Event::Message {
        level: Level::Error,
        text: format!("provisioning run {} failed: {e:#}", p.run_id),
    });
    let batch = EventBatch {
        events: vec![SequencedEvent {
            seq: p.acked_seq + 1,
            at: time::OffsetDateTime::now_utc(),
            event: RunEvent::Failed {
                error: format!("{e:#}"),
            },
        }],
    };
    if let Err(e) = api.post_events(id, p.run_id, &batch) {
        reporter.emit(Event::Message {
            level: Level::Warn,
            text: format!("reporting run {} as failed: {e}", p.run_id),
        });
    }
}

fn order_summary(o: &Order) -> (&'static str, String) {
    match o {
        Order::Provision(p) => (
            "provision",
            format!(
                "run {} image {} ({})",
                p.run_id,
                p.image.name,
                p.image.oci_url.as_deref().unwrap_or("no OCI reference")
            ),
        ),
        Order::BootInstalledSystem { action_id } => {
            ("boot_installed_system", format!("action {action_id}"))
        }
        Order::Reboot { action_id } => ("reboot", format!("action {action_id}")),
    }
}

fn orders(
    cfg: &Config,
    id: &Identity,
    api: Arc<dyn Api>,
    reporter: Arc<Reporter>,
    hooks: &Hooks,
    done: &mut usize,
) -> Result<()> {
    let mut after = None;
    // Actions this agent could not carry out: left pending, not retried every poll.
    let mut refused: HashSet<Uuid> = HashSet::new();
    loop {
        if hooks.max_orders.is_some_and(|m| *done >= m) {
            return Ok(());
        }
        let resp = api.orders(id, after, LONG_POLL_SECS)?;
        after = Some(resp.version);
        let Some(order) = resp.order else {
            continue;
        };
        if let Order::BootInstalledSystem { action_id } | Order::Reboot { action_id } = &order
            && refused.contains(action_id)
        {
            continue;
        }
        let (kind, summary) = order_summary(&order);
        reporter.emit(Event::Order {
            kind: kind.into(),
            summary,
        });
        match order {
            Order::Provision(p) if hooks.provision_via_installer => {
                // Re-provisioning: the disk in use cannot be written from here. Boot the
                // installer (which reconnects as this machine and takes the same run).
                let e = reinstall(cfg, &p, api.as_ref(), &reporter);
                *done += 1;
                fail_run(id, &p, api.as_ref(), &reporter, &e);
            }
            Order::Provision(p) => {
                let outcome = provisioning::run(&p, cfg, id, api.clone(), reporter.clone())?;
                *done += 1;
                match outcome {
                    RunOutcome::Failed(error) => reporter.emit(Event::Message {
                        level: Level::Error,
                        text: format!("provisioning run {} failed: {error}", p.run_id),
                    }),
                    RunOutcome::Completed(plan) => {
                        reporter.emit(Event::info(format!(
                            "provisioning run {} completed; installed kernel {}",
                            p.run_id,
                            plan.kernel.display()
                        )));
                        if hooks.boot_after_provision {
                            let e = hooks.boot.boot(Some(&plan), &mut || {});
                            reporter.emit(Event::Message {
                                level: Level::Warn,
                                text: format!("{e:#}; rebooting instead"),
                            });
                            return Err((hooks.reboot)("provisioning completed"));
                        }
                    }
                }
            }
            Order::BootInstalledSystem { action_id } => {
                let mut acked = None;
                let e = hooks.boot.boot(None, &mut || {
                    acked = Some(api.ack_action(id, action_id));
                });
                *done += 1;
                let text = match acked {
                    Some(r) => {
                        r?;
                        format!(
                            "boot_installed_system (action {action_id}) failed after it was acknowledged: {e:#}"
                        )
                    }
                    None => {
                        refused.insert(action_id);
                        format!(
                            "boot_installed_system (action {action_id}) failed: {e:#}; the action stays pending"
                        )
                    }
                };
                reporter.emit(Event::Message {
                    level: Level::Error,
                    text,
                });
            }
            Order::Reboot { action_id } => {
                // Acknowledged first: a rebooted agent cannot acknowledge afterwards.
                api.ack_action(id, action_id)?;
                *done += 1;
                let e = (hooks.reboot)(&format!("reboot order {action_id}"));
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::Secret;
    use crate::control::boot::NoKexec;
    use crate::control::fake::{Scripted, unscripted};
    use crate::events::tests::Collect;
    use kiln_protocol::{HeartbeatResponse, OrdersResponse, RegisterRequest, RegisterResponse};
    use std::sync::Mutex;

    /// A control plane answering orders from a script and logging every call in order.
    #[derive(Default)]
    struct Fake {
        orders: Mutex<Vec<Result<OrdersResponse, CallError>>>,
        calls: Mutex<Vec<String>>,
        registrations: Mutex<u32>,
    }

    impl Fake {
        fn log(&self, s: String) {
            self.calls.lock().unwrap().push(s);
        }
    }

    impl Scripted for Fake {
        fn register(&self, _: &RegisterRequest) -> Result<RegisterResponse, CallError> {
            let mut n = self.registrations.lock().unwrap();
            *n += 1;
            self.log(format!("register {n}"));
            Ok(RegisterResponse::Approved {
                machine_uuid: Uuid::from_u128(u128::from(*n)),
                credential: format!("kmc_{n}"),
            })
        }
        fn heartbeat(&self, _: &Identity, _: &Heartbeat) -> Result<HeartbeatResponse, CallError> {
            Ok(HeartbeatResponse {
                interval_secs: 3600,
            })
        }
        fn orders(
            &self,
            id: &Identity,
            after: Option<u64>,
            _: u64,
        ) -> Result<OrdersResponse, CallError> {
            self.log(format!("orders {} after {after:?}", id.credential.expose()));
            let mut o = self.orders.lock().unwrap();
            if o.is_empty() {
                return unscripted();
            }
            o.remove(0)
        }
        fn ack_action(&self, _: &Identity, action: Uuid) -> Result<(), CallError> {
            self.log(format!("ack {action}"));
            Ok(())
        }
    }

    fn resp(version: u64, order: Option<Order>) -> Result<OrdersResponse, CallError> {
        Ok(OrdersResponse { version, order })
    }

    type Setup = (Config, Hooks, Arc<Reporter>, Collect, tempfile::TempDir);

    fn setup(fake: Arc<Fake>, max_orders: usize) -> Setup {
        let t = tempfile::tempdir().unwrap();
        let s = crate::cmdline::Settings::parse("kiln.url=http://cp:8080 kiln.token=T").settings;
        let cfg = Config::from_cmdline(&s, t.path(), None).unwrap().unwrap();
        let f = fake.clone();
        let hooks = Hooks {
            boot: Arc::new(NoKexec),
            reboot: Arc::new(move |why| {
                f.log(format!("reboot: {why}"));
                anyhow::anyhow!("test reboot refused")
            }),
            boot_after_provision: false,
            provision_via_installer: false,
            claim_poll: Duration::from_millis(1),
            inventory: Arc::new(kiln_protocol::Inventory::default),
            max_orders: Some(max_orders),
        };
        let r = Arc::new(Reporter::new());
        let c = Collect::default();
        r.add_sink(Box::new(c.clone()));
        (cfg, hooks, r, c, t)
    }

    #[test]
    fn actions_are_acked_before_they_run_and_unbootable_ones_stay_pending() {
        let fake = Arc::new(Fake::default());
        let boot = Uuid::from_u128(0xb0);
        let reboot = Uuid::from_u128(0x4e);
        fake.orders.lock().unwrap().extend([
            resp(1, None),
            resp(2, Some(Order::BootInstalledSystem { action_id: boot })),
            // The same action again (still pending): not retried.
            resp(2, Some(Order::BootInstalledSystem { action_id: boot })),
            resp(3, Some(Order::Reboot { action_id: reboot })),
        ]);
        let (mut cfg, hooks, r, c, _t) = setup(fake.clone(), 5);
        let e = serve(&mut cfg, fake.clone(), r, &hooks).unwrap_err();
        assert!(e.to_string().contains("test reboot refused"), "{e}");
        assert_eq!(
            *fake.calls.lock().unwrap(),
            [
                "register 1".to_string(),
                "orders kmc_1 after None".into(),
                "orders kmc_1 after Some(1)".into(),
                "orders kmc_1 after Some(2)".into(),
                "orders kmc_1 after Some(2)".into(),
                format!("ack {reboot}"),
                format!("reboot: reboot order {reboot}"),
            ]
        );
        let text: String =
            c.0.lock()
                .unwrap()
                .iter()
                .map(|r| format!("{}\n", r.event))
                .collect();
        assert!(
            text.contains("kexec not available in this build") && text.contains("stays pending"),
            "{text}"
        );
        assert_eq!(
            text.matches("order boot_installed_system").count(),
            1,
            "{text}"
        );
    }

    #[test]
    fn unauthorized_registers_again() {
        let fake = Arc::new(Fake::default());
        fake.orders.lock().unwrap().extend([
            Err(CallError::Unauthorized {
                what: "orders".into(),
                message: "machine credential revoked".into(),
            }),
            resp(
                1,
                Some(Order::Reboot {
                    action_id: Uuid::nil(),
                }),
            ),
        ]);
        let (mut cfg, hooks, r, _, _t) = setup(fake.clone(), 1);
        cfg.identity = Some(Identity {
            machine_uuid: Uuid::nil(),
            credential: Secret::new("kmc_old"),
        });
        assert!(serve(&mut cfg, fake.clone(), r, &hooks).is_err());
        let calls = fake.calls.lock().unwrap().clone();
        assert_eq!(
            &calls[..3],
            [
                "orders kmc_old after None",
                "register 1",
                "orders kmc_1 after None"
            ]
        );
        assert_eq!(cfg.identity.unwrap().credential.expose(), "kmc_1");
    }
}
