//! Snapshot tests of whole screens (ratatui's TestBackend, insta `.snap` files under
//! `snapshots/`), at the VGA text size 80x25 and a framebuffer size 128x48.

use super::state::State;
use super::state::tests::{address, net, rec};
use crate::events::{Event, Level};
use crate::network::NetEvent;
use crate::provision::events::{Event as Progress, Phase};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::style::Color;

const MIB: u64 = 1 << 20;

fn screen(state: &State, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| f.render_widget(state, f.area())).unwrap();
    t
}

fn booted(url: Option<&str>) -> State {
    let mut s = State::new(Level::Info);
    for (ms, e) in [
        (
            1200,
            Event::Banner {
                version: "0.1.0".into(),
                since_boot_ms: 1200,
            },
        ),
        (
            1210,
            Event::ControlPlane {
                url: url.map(Into::into),
                token: false,
                ca_pin: None,
            },
        ),
        (
            1300,
            net(NetEvent::LinkUp {
                ifname: "eth0".into(),
                speed_mbps: Some(1000),
            }),
        ),
        (
            1300,
            net(NetEvent::LinkDown {
                ifname: "eth1".into(),
            }),
        ),
        (
            1310,
            net(NetEvent::DhcpDiscover {
                ifname: "eth0".into(),
                xid: 1,
            }),
        ),
    ] {
        s.apply(&rec(ms, e));
    }
    s.set_mac("eth0", "52:54:00:12:34:56".into());
    s
}

fn online(url: Option<&str>) -> State {
    let mut s = booted(url);
    s.apply(&rec(2100, net(address("eth0"))));
    s.apply(&rec(
        2110,
        net(NetEvent::Hostname {
            name: "rack3-u17".into(),
        }),
    ));
    s
}

fn approval() -> State {
    let mut s = online(Some("https://kiln.example:8443"));
    s.apply(&rec(
        3000,
        Event::ApprovalCode {
            code: "K7M4QX".into(),
            expires_in_s: 900,
            server: "https://kiln.example:8443".into(),
        },
    ));
    s.tick(3000 + 65_000);
    s
}

fn provisioning() -> State {
    let mut s = online(Some("https://kiln.example:8443"));
    for (ms, e) in [
        (
            4000,
            Event::Registered {
                server: "https://kiln.example:8443".into(),
                machine_uuid: "0b6f3c2e-7d4a-4e8f-9a51-2f6d8c1b0e93".into(),
                via: "approval code".into(),
            },
        ),
        (
            4100,
            Event::Order {
                kind: "provision".into(),
                summary: "registry.example/ubuntu:24.04 to /dev/nvme0n1".into(),
            },
        ),
        (
            4200,
            Event::Provision {
                detail: Progress::msg(Phase::Inventory, "target /dev/nvme0n1 (SAMSUNG 960 GB)"),
            },
        ),
        (
            24_000,
            Event::Provision {
                detail: Progress {
                    phase: Phase::Layer0,
                    done: 860 * MIB,
                    total: Some(2048 * MIB),
                    rate: Some(43.0 * MIB as f64),
                    message: "sha256:3f9a..e1 to /dev/nvme0n1".into(),
                },
            },
        ),
    ] {
        s.apply(&rec(ms, e));
    }
    s
}

#[test]
fn waiting_for_network_80x25() {
    let mut s = booted(Some("https://kiln.example:8443"));
    s.tick(9000);
    insta::assert_snapshot!(screen(&s, 80, 25).backend());
}

#[test]
fn approval_code_80x25() {
    let t = screen(&approval(), 80, 25);
    insta::assert_snapshot!(t.backend());
    // The big code is bright yellow; the header bar is blue.
    let buf = t.backend().buffer();
    let lit = buf.content().iter().filter(|c| c.symbol() == "█").count();
    assert!(lit > 100, "{lit} full blocks");
    assert!(
        buf.content()
            .iter()
            .filter(|c| c.symbol() == "█")
            .all(|c| c.fg == Color::LightYellow)
    );
    assert_eq!(buf[(0, 0)].bg, Color::Blue);
}

#[test]
fn approval_code_128x48() {
    insta::assert_snapshot!(screen(&approval(), 128, 48).backend());
}

#[test]
fn approval_code_expired() {
    let mut s = approval();
    s.tick(3000 + 901_000);
    let t = screen(&s, 80, 25);
    let text = format!("{}", t.backend());
    assert!(text.contains("expired: a new code follows"), "{text}");
}

#[test]
fn provisioning_layer0_42_percent_80x25() {
    insta::assert_snapshot!(screen(&provisioning(), 80, 25).backend());
}

#[test]
fn provisioning_layer0_42_percent_128x48() {
    insta::assert_snapshot!(screen(&provisioning(), 128, 48).backend());
}

#[test]
fn failure_80x25() {
    let mut s = provisioning();
    s.apply(&rec(
        30_000,
        Event::Fatal {
            error: "provisioning: writing layer 0 to /dev/nvme0n1: Input/output error (os error 5)"
                .into(),
            retry_in_s: 20,
        },
    ));
    s.tick(32_000);
    insta::assert_snapshot!(screen(&s, 80, 25).backend());
}

#[test]
fn no_control_plane_80x25() {
    insta::assert_snapshot!(screen(&online(None), 80, 25).backend());
}

#[test]
fn tiny_and_empty_screens_do_not_panic() {
    for (w, h) in [(0, 0), (1, 1), (20, 5), (40, 12), (300, 100)] {
        for s in [State::default(), approval(), provisioning()] {
            screen(&s, w, h);
        }
    }
}

/// Everything a pseudo-terminal's master side reads, collected by a thread.
struct Pty {
    slave: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Pty {
    fn open(cols: u16, rows: u16) -> Pty {
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let slave = ptsname(&master, Vec::new()).unwrap();
        let ws = rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(&master, ws).unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let mut master = std::fs::File::from(master);
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = master.read(&mut buf) {
                s.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            slave: slave.into_string().unwrap(),
            seen,
        }
    }

    fn len(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Waits (up to 5 s) until `needle` shows up in the output after byte `from`.
    fn wait_for(&self, from: usize, needle: &str) -> usize {
        for _ in 0..100 {
            let seen = self.seen.lock().unwrap();
            let text = String::from_utf8_lossy(&seen[from.min(seen.len())..]);
            if let Some(at) = text.find(needle) {
                return from + at;
            }
            drop(seen);
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let seen = self.seen.lock().unwrap();
        panic!(
            "{needle:?} not written after byte {from}: {:?}",
            String::from_utf8_lossy(&seen[from.min(seen.len())..])
        );
    }
}

#[test]
fn render_thread_draws_pauses_for_a_shell_and_resumes() {
    use crate::events::Sink;
    let pty = Pty::open(80, 25);
    let (mut sink, handle) = super::start(&pty.slave, Level::Info).unwrap();
    let displays = super::Displays::new(vec![(pty.slave.clone(), handle)]);
    assert_eq!(displays.names(), std::slice::from_ref(&pty.slave));
    sink.record(&rec(
        3000,
        Event::ApprovalCode {
            code: "K7M4QX".into(),
            expires_in_s: 900,
            server: "https://kiln.example:8443".into(),
        },
    ));
    // Set-up (no blanking, cursor hidden), then the screen.
    let setup = pty.wait_for(0, "\x1b[9;0]");
    let header = pty.wait_for(setup, "KILN INSTALLER");
    pty.wait_for(header, "K7M4QX");
    pty.wait_for(header, "█");

    // A shell on that console: the TUI restores it and stops drawing.
    let paused = displays.hand_over(&pty.slave);
    let restored = pty.wait_for(header, "\x1b[?25h");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let quiet_from = pty.len();
    sink.record(&rec(4000, Event::info("meanwhile")));
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(pty.len(), quiet_from, "drew while paused");
    assert!(restored < quiet_from);

    // Shell exited: set-up again and a full repaint including what came meanwhile.
    drop(paused);
    let again = pty.wait_for(quiet_from, "\x1b[9;0]");
    // ratatui skips blank cells after a clear: look for one word.
    pty.wait_for(again, "meanwhile");
    pty.wait_for(again, "KILN INSTALLER");

    // Another console's shell does not stop this TUI.
    let other = displays.hand_over("/dev/ttyS0");
    drop(other);
}

#[test]
fn start_refuses_what_is_not_a_terminal_or_too_small() {
    let err = super::start("/dev/null", Level::Info).err().unwrap();
    assert!(format!("{err:#}").contains("/dev/null"), "{err:#}");
    let pty = Pty::open(30, 10);
    let err = super::start(&pty.slave, Level::Info).err().unwrap();
    assert!(format!("{err:#}").contains("too small"), "{err:#}");
}
