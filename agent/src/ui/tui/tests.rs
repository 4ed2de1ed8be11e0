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
