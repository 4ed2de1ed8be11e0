//! What the TUI shows, built from the agent's typed events.
//!
//! [`State::apply`] folds one [`Record`] into the state and does no I/O; the time used
//! for countdowns is the record's uptime, or what [`State::tick`] is told. Rendering
//! lives in [`super::view`].

use crate::events::{Event, Level, PowerAction, Record};
use crate::network::NetEvent;
use crate::provision::events::{Event as Progress, Phase};
use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;

/// How many log lines are kept (more than any screen shows).
pub const LOG_LINES: usize = 100;

/// One network interface as the network events described it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Link {
    pub up: bool,
    pub speed_mbps: Option<u32>,
    /// From sysfs, filled in by the render thread ([`State::set_mac`]).
    pub mac: Option<String>,
    pub address: Option<(Ipv4Addr, u8)>,
    pub gateway: Option<Ipv4Addr>,
    /// A DHCP exchange is under way.
    pub dhcp: bool,
}

/// Registration with the control plane.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub server: String,
    pub machine_uuid: String,
    pub via: String,
}

/// An approval code waiting for an operator.
#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    pub code: String,
    pub server: String,
    /// Uptime (ms) at which the code expires.
    pub expires_at_ms: u64,
}

/// The main task failed; init retries it.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub error: String,
    /// Uptime (ms) of the retry.
    pub retry_at_ms: u64,
    /// The provisioning phase that was running, if any.
    pub phase: Option<Phase>,
}

/// A line in the log panel.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub uptime_ms: u64,
    pub level: Level,
    pub text: String,
}

/// What the middle of the screen is about, most urgent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Power,
    Failed,
    Provisioning,
    Order,
    Approval,
    Registered,
    /// Network up, no control plane to talk to (`kiln.url=` unset).
    Idle,
    /// Network up, the control plane not answered yet.
    Connecting,
    WaitingForNetwork,
}

/// Everything the TUI draws.
#[derive(Debug, Clone)]
pub struct State {
    /// Uptime (ms) used for countdowns.
    pub now_ms: u64,
    pub version: String,
    pub hostname: Option<String>,
    pub links: BTreeMap<String, Link>,
    /// The interface whose lease is used.
    pub used: Option<String>,
    pub dns: Vec<Ipv4Addr>,
    pub url: Option<String>,
    pub token: bool,
    pub registration: Option<Registration>,
    pub approval: Option<Approval>,
    /// The running order: kind and summary.
    pub order: Option<(String, String)>,
    pub progress: Option<Progress>,
    /// Phases that reported, in order.
    pub phases: Vec<Phase>,
    pub failure: Option<Failure>,
    pub power: Option<(PowerAction, String)>,
    pub log: VecDeque<LogLine>,
    /// The lowest level shown in the log (`kiln.debug` shows debug lines).
    pub min_level: Level,
}

impl Default for State {
    fn default() -> Self {
        State::new(Level::Info)
    }
}

impl State {
    pub fn new(min_level: Level) -> Self {
        State {
            now_ms: 0,
            version: String::new(),
            hostname: None,
            links: BTreeMap::new(),
            used: None,
            dns: Vec::new(),
            url: None,
            token: false,
            registration: None,
            approval: None,
            order: None,
            progress: None,
            phases: Vec::new(),
            failure: None,
            power: None,
            log: VecDeque::new(),
            min_level,
        }
    }

    /// Advances the clock used for countdowns (never backwards).
    pub fn tick(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
    }

    /// Records the MAC address of `ifname` (read from sysfs by the caller).
    pub fn set_mac(&mut self, ifname: &str, mac: String) {
        self.links.entry(ifname.to_string()).or_default().mac = Some(mac);
    }

    /// Folds one record into the state.
    pub fn apply(&mut self, record: &Record) {
        self.tick(record.uptime_ms);
        if record.level >= self.min_level {
            self.log.push_back(LogLine {
                uptime_ms: record.uptime_ms,
                level: record.level,
                text: record.event.to_string(),
            });
            while self.log.len() > LOG_LINES {
                self.log.pop_front();
            }
        }
        match &record.event {
            Event::Banner { version, .. } => self.version = version.clone(),
            Event::ControlPlane { url, token, .. } => {
                self.url = url.clone();
                self.token = *token;
            }
            Event::Network { detail } => self.network(detail),
            Event::ApprovalCode {
                code,
                expires_in_s,
                server,
            } => {
                self.failure = None;
                self.approval = Some(Approval {
                    code: code.clone(),
                    server: server.clone(),
                    expires_at_ms: record.uptime_ms + expires_in_s * 1000,
                });
            }
            Event::Registered {
                server,
                machine_uuid,
                via,
            } => {
                self.failure = None;
                self.approval = None;
                self.registration = Some(Registration {
                    server: server.clone(),
                    machine_uuid: machine_uuid.clone(),
                    via: via.clone(),
                });
            }
            Event::Order { kind, summary } => {
                self.failure = None;
                self.order = Some((kind.clone(), summary.clone()));
                self.progress = None;
                self.phases.clear();
            }
            Event::Provision { detail } => {
                self.failure = None;
                if self.phases.last() != Some(&detail.phase) {
                    self.phases.push(detail.phase);
                }
                self.progress = Some(detail.clone());
            }
            Event::Fatal { error, retry_in_s } => {
                self.failure = Some(Failure {
                    error: error.clone(),
                    retry_at_ms: record.uptime_ms + retry_in_s * 1000,
                    phase: self.progress.as_ref().map(|p| p.phase),
                });
            }
            Event::Power { action, reason } => self.power = Some((*action, reason.clone())),
            _ => {}
        }
    }

    fn network(&mut self, e: &NetEvent) {
        fn link<'a>(links: &'a mut BTreeMap<String, Link>, name: &str) -> &'a mut Link {
            links.entry(name.to_string()).or_default()
        }
        match e {
            NetEvent::LinkUp { ifname, speed_mbps } => {
                let l = link(&mut self.links, ifname);
                l.up = true;
                l.speed_mbps = *speed_mbps;
            }
            NetEvent::LinkDown { ifname } => {
                let l = link(&mut self.links, ifname);
                l.up = false;
                l.dhcp = false;
            }
            NetEvent::DhcpDiscover { ifname, .. } | NetEvent::DhcpRequest { ifname, .. } => {
                link(&mut self.links, ifname).dhcp = true
            }
            NetEvent::AddressApplied {
                ifname,
                address,
                prefix_len,
                gateway,
                ..
            } => {
                let l = link(&mut self.links, ifname);
                l.address = Some((*address, *prefix_len));
                l.gateway = *gateway;
                l.dhcp = false;
                self.used = Some(ifname.clone());
                if self.failure.is_some() && self.registration.is_none() {
                    self.failure = None;
                }
            }
            NetEvent::LeaseLost { ifname, .. } => {
                let l = link(&mut self.links, ifname);
                l.address = None;
                l.dhcp = true;
            }
            NetEvent::Dns { servers, .. } => self.dns = servers.clone(),
            NetEvent::Hostname { name } => self.hostname = Some(name.clone()),
            _ => {}
        }
    }

    /// The interface shown as the machine's identity: the used one, else the first.
    pub fn primary(&self) -> Option<(&String, &Link)> {
        self.used
            .as_ref()
            .and_then(|u| self.links.get_key_value(u))
            .or_else(|| self.links.iter().next())
    }

    /// Whether an address is on the used interface.
    pub fn network_up(&self) -> bool {
        self.primary().is_some_and(|(_, l)| l.address.is_some())
    }

    /// Seconds until the approval code expires (0 once expired).
    pub fn approval_left_s(&self) -> Option<u64> {
        let a = self.approval.as_ref()?;
        Some(a.expires_at_ms.saturating_sub(self.now_ms).div_ceil(1000))
    }

    /// Seconds until init retries after a failure.
    pub fn retry_left_s(&self) -> Option<u64> {
        let f = self.failure.as_ref()?;
        Some(f.retry_at_ms.saturating_sub(self.now_ms).div_ceil(1000))
    }

    pub fn stage(&self) -> Stage {
        if self.power.is_some() {
            Stage::Power
        } else if self.failure.is_some() {
            Stage::Failed
        } else if self.progress.is_some() {
            Stage::Provisioning
        } else if self.order.is_some() {
            Stage::Order
        } else if self.approval.is_some() {
            Stage::Approval
        } else if self.registration.is_some() {
            Stage::Registered
        } else if !self.network_up() {
            Stage::WaitingForNetwork
        } else if self.url.is_none() {
            Stage::Idle
        } else {
            Stage::Connecting
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::events::SCHEMA_VERSION;

    pub fn rec(uptime_ms: u64, event: Event) -> Record {
        Record {
            schema: SCHEMA_VERSION,
            seq: 0,
            uptime_ms,
            level: event.level(),
            event,
        }
    }

    pub fn net(detail: NetEvent) -> Event {
        Event::Network { detail }
    }

    pub fn address(ifname: &str) -> NetEvent {
        NetEvent::AddressApplied {
            ifname: ifname.into(),
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix_len: 24,
            gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
            routes: 1,
            mtu: None,
            since_boot_ms: 2100,
        }
    }

    #[test]
    fn network_events_build_the_identity() {
        let mut s = State::new(Level::Info);
        assert_eq!(s.stage(), Stage::WaitingForNetwork);
        s.apply(&rec(
            1000,
            net(NetEvent::LinkUp {
                ifname: "eth1".into(),
                speed_mbps: None,
            }),
        ));
        s.apply(&rec(
            1000,
            net(NetEvent::LinkUp {
                ifname: "eth0".into(),
                speed_mbps: Some(1000),
            }),
        ));
        s.apply(&rec(
            1100,
            net(NetEvent::DhcpDiscover {
                ifname: "eth1".into(),
                xid: 7,
            }),
        ));
        assert_eq!(s.primary().unwrap().0, "eth0");
        assert!(s.links["eth1"].dhcp);
        assert_eq!(s.stage(), Stage::WaitingForNetwork);
        s.apply(&rec(2100, net(address("eth1"))));
        s.apply(&rec(
            2200,
            net(NetEvent::Hostname {
                name: "rack3-u17".into(),
            }),
        ));
        s.set_mac("eth1", "52:54:00:12:34:56".into());
        let (name, l) = s.primary().unwrap();
        assert_eq!(name, "eth1");
        assert_eq!(l.address, Some((Ipv4Addr::new(10, 0, 2, 15), 24)));
        assert_eq!(l.mac.as_deref(), Some("52:54:00:12:34:56"));
        assert!(!l.dhcp);
        assert_eq!(s.hostname.as_deref(), Some("rack3-u17"));
        // No kiln.url=: nothing to connect to.
        assert_eq!(s.stage(), Stage::Idle);
        s.url = Some("https://kiln:8443".into());
        assert_eq!(s.stage(), Stage::Connecting);
        // Debug lines (DHCP) are not logged at info level.
        assert_eq!(s.log.len(), 4);
    }

    #[test]
    fn approval_registration_order_progress_failure() {
        let mut s = State::new(Level::Info);
        s.apply(&rec(1000, net(address("eth0"))));
        s.apply(&rec(
            5000,
            Event::ApprovalCode {
                code: "K7M4QX".into(),
                expires_in_s: 900,
                server: "https://kiln:8443".into(),
            },
        ));
        assert_eq!(s.stage(), Stage::Approval);
        assert_eq!(s.approval_left_s(), Some(900));
        s.tick(5000 + 899_500);
        assert_eq!(s.approval_left_s(), Some(1));
        s.tick(5000 + 901_000);
        assert_eq!(s.approval_left_s(), Some(0));
        s.tick(0); // never backwards
        assert_eq!(s.now_ms, 906_000);

        s.apply(&rec(
            907_000,
            Event::Registered {
                server: "https://kiln:8443".into(),
                machine_uuid: "0b6f".into(),
                via: "approval code".into(),
            },
        ));
        assert_eq!(s.approval, None);
        assert_eq!(s.stage(), Stage::Registered);
        s.apply(&rec(
            908_000,
            Event::Order {
                kind: "provision".into(),
                summary: "ubuntu:24.04 to /dev/nvme0n1".into(),
            },
        ));
        assert_eq!(s.stage(), Stage::Order);
        for (phase, done) in [
            (Phase::Inventory, 0),
            (Phase::Layer0, 10),
            (Phase::Layer0, 20),
        ] {
            s.apply(&rec(
                909_000,
                Event::Provision {
                    detail: Progress {
                        phase,
                        done,
                        total: Some(100),
                        rate: None,
                        message: String::new(),
                    },
                },
            ));
        }
        assert_eq!(s.stage(), Stage::Provisioning);
        assert_eq!(s.phases, [Phase::Inventory, Phase::Layer0]);
        assert_eq!(s.progress.as_ref().unwrap().done, 20);

        s.apply(&rec(
            910_000,
            Event::Fatal {
                error: "writing /dev/nvme0n1: No space left".into(),
                retry_in_s: 5,
            },
        ));
        assert_eq!(s.stage(), Stage::Failed);
        assert_eq!(s.failure.as_ref().unwrap().phase, Some(Phase::Layer0));
        assert_eq!(s.retry_left_s(), Some(5));
        assert_eq!(s.log.back().unwrap().level, Level::Error);
        // The retry's new order clears the failure and the old progress.
        s.apply(&rec(
            916_000,
            Event::Order {
                kind: "provision".into(),
                summary: "again".into(),
            },
        ));
        assert_eq!(s.stage(), Stage::Order);
        assert!(s.phases.is_empty());
        s.apply(&rec(
            917_000,
            Event::Power {
                action: PowerAction::Reboot,
                reason: "order".into(),
            },
        ));
        assert_eq!(s.stage(), Stage::Power);
    }

    #[test]
    fn log_is_bounded() {
        let mut s = State::new(Level::Info);
        for i in 0..(LOG_LINES as u64 + 10) {
            s.apply(&rec(i, Event::info(format!("line {i}"))));
        }
        assert_eq!(s.log.len(), LOG_LINES);
        assert_eq!(s.log.front().unwrap().text, "line 10");
    }
}
