//! Drawing the [`State`]: a header bar, the machine's identity and control-plane status,
//! a main panel for the current [`Stage`] (the approval code big, provisioning progress,
//! a failure), the recent log lines and a command prompt.
//!
//! Only characters the Linux VT's default font has (CP437) are used: ASCII, box
//! drawing lines, the blocks `█ ▀ ▄`, `√` and `►`. Colours are the 16 VT colours.

use super::font::BigText;
use super::state::{Stage, State};
use crate::events::Level;
use crate::provision::events::{Phase, human_bytes};
use ratatui::buffer::Buffer;
use ratatui::layout::{Alignment, Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Gauge, Paragraph, Widget, Wrap};

const PHASES: [Phase; 8] = [
    Phase::Inventory,
    Phase::Layer0,
    Phase::Partition,
    Phase::RootFs,
    Phase::Extract,
    Phase::CloudInit,
    Phase::Inject,
    Phase::BootPlan,
];

/// The prompt on the bottom row; the cursor sits after it so typed commands echo there.
const PROMPT: &str = " commands: shell reboot poweroff help > ";

/// Where the cursor goes: after the prompt on the last row.
pub fn prompt_position(area: Rect) -> Position {
    Position::new(
        area.x + (PROMPT.len() as u16).min(area.width.saturating_sub(1)),
        area.bottom().saturating_sub(1),
    )
}

fn label(text: &str) -> Span<'_> {
    Span::styled(format!("{text:<5} "), Style::new().fg(Color::Cyan))
}

fn panel(title: &str, color: Color) -> Block<'_> {
    Block::new()
        .borders(Borders::ALL)
        .border_style(Style::new().fg(color))
        .title(Span::styled(
            format!(" {title} "),
            Style::new().fg(color).add_modifier(Modifier::BOLD),
        ))
}

fn mmss(s: u64) -> String {
    format!("{}:{:02}", s / 60, s % 60)
}

impl State {
    /// Rows the main panel wants at this width.
    fn main_height(&self, width: u16, avail: u16) -> u16 {
        let want = match self.stage() {
            Stage::Approval => {
                let scale = BigText::fit(6, Rect::new(0, 0, width.saturating_sub(4), avail));
                BigText::height(scale) + 5
            }
            Stage::Provisioning => 8,
            Stage::Failed => 8,
            Stage::WaitingForNetwork => 4 + self.links.len().clamp(1, 4) as u16,
            _ => 6,
        };
        want.min(avail)
    }

    fn header(&self, area: Rect, buf: &mut Buffer) {
        let style = Style::new().bg(Color::Blue).fg(Color::White);
        let up = self.now_ms / 1000;
        let right = format!("up {}:{:02}:{:02} ", up / 3600, up / 60 % 60, up % 60);
        let left = Line::from(vec![
            Span::styled(" KILN INSTALLER ", style.add_modifier(Modifier::BOLD)),
            Span::styled(format!(" kiln-agent {}", self.version), style),
        ]);
        Paragraph::new(left).style(style).render(area, buf);
        Paragraph::new(right)
            .alignment(Alignment::Right)
            .style(style)
            .render(area, buf);
    }

    fn identity(&self, area: Rect, buf: &mut Buffer) {
        let dash = || "-".to_string();
        let (ifname, link) = match self.primary() {
            Some((n, l)) => (n.clone(), Some(l)),
            None => (dash(), None),
        };
        let mac = link.and_then(|l| l.mac.clone()).unwrap_or_else(dash);
        let mut mac = format!("{mac} {ifname}");
        if let Some(s) = link.and_then(|l| l.speed_mbps) {
            let speed = format!(" {s}Mb/s");
            // Only where it fits: the panel is 34 columns wide on an 80-column console.
            if 6 + mac.len() + speed.len() <= area.width.saturating_sub(2) as usize {
                mac.push_str(&speed);
            }
        }
        let ip = link.and_then(|l| l.address).map_or_else(
            || "none yet".to_string(),
            |(a, p)| {
                let gw = link
                    .and_then(|l| l.gateway)
                    .map_or(String::new(), |g| format!(" via {g}"));
                format!("{a}/{p}{gw}")
            },
        );
        let lines = vec![
            Line::from(vec![
                label("Host"),
                Span::raw(self.hostname.clone().unwrap_or_else(dash)),
            ]),
            Line::from(vec![label("MAC"), Span::raw(mac)]),
            Line::from(vec![label("IPv4"), Span::raw(ip)]),
        ];
        Paragraph::new(lines)
            .block(panel("Machine", Color::Cyan))
            .render(area, buf);
    }

    fn control(&self, area: Rect, buf: &mut Buffer) {
        let (status, color) = match (&self.registration, &self.approval, &self.url) {
            (Some(r), _, _) => (format!("registered ({})", r.via), Color::Green),
            (None, Some(_), _) => ("waiting for approval".to_string(), Color::Yellow),
            (None, None, None) => ("not configured".to_string(), Color::DarkGray),
            (None, None, Some(_)) if self.network_up() => ("connecting".to_string(), Color::Yellow),
            (None, None, Some(_)) => ("waiting for network".to_string(), Color::Yellow),
        };
        let server = self
            .registration
            .as_ref()
            .map(|r| r.server.clone())
            .or_else(|| self.url.clone())
            .unwrap_or_else(|| "none (kiln.url= not set)".into());
        let third = match &self.registration {
            Some(r) => Line::from(vec![label("UUID"), Span::raw(r.machine_uuid.clone())]),
            None => Line::from(vec![
                label("Token"),
                Span::raw(if self.token {
                    "bootstrap token"
                } else {
                    "none: approval code"
                }),
            ]),
        };
        let lines = vec![
            Line::from(vec![label("URL"), Span::raw(server)]),
            Line::from(vec![
                label("State"),
                Span::styled(status, Style::new().fg(color).add_modifier(Modifier::BOLD)),
            ]),
            third,
        ];
        Paragraph::new(lines)
            .block(panel("Control plane", Color::Cyan))
            .render(area, buf);
    }

    fn main_panel(&self, area: Rect, buf: &mut Buffer) {
        match self.stage() {
            Stage::Approval => self.approval_panel(area, buf),
            Stage::Provisioning => self.progress_panel(area, buf),
            Stage::Failed => self.failure_panel(area, buf),
            stage => {
                let (title, color, lines) = self.status_lines(stage);
                Paragraph::new(lines)
                    .wrap(Wrap { trim: false })
                    .block(panel(title, color))
                    .render(area, buf);
            }
        }
    }

    fn status_lines(&self, stage: Stage) -> (&'static str, Color, Vec<Line<'_>>) {
        let bold = Style::new().add_modifier(Modifier::BOLD);
        match stage {
            Stage::Power => {
                let (action, reason) = self
                    .power
                    .as_ref()
                    .map_or((String::new(), ""), |(a, r)| (a.to_string(), r.as_str()));
                (
                    "Power",
                    Color::Magenta,
                    vec![Line::styled(format!("{action}: {reason}"), bold)],
                )
            }
            Stage::Order => {
                let (kind, summary) = self.order.clone().unwrap_or_default();
                (
                    "Order",
                    Color::Green,
                    vec![
                        Line::styled(format!("Order {kind}"), bold),
                        Line::raw(summary),
                    ],
                )
            }
            Stage::Registered => (
                "Registered",
                Color::Green,
                vec![
                    Line::styled("Registered; waiting for an order.", bold),
                    Line::raw("Assign an image to this machine on the control plane."),
                ],
            ),
            Stage::Idle => (
                "Ready",
                Color::Green,
                vec![
                    Line::styled("The network is up. No control plane is configured.", bold),
                    Line::raw("Boot with kiln.url=https://SERVER to register this machine."),
                ],
            ),
            Stage::Connecting => (
                "Control plane",
                Color::Yellow,
                vec![
                    Line::styled("The network is up; contacting the control plane...", bold),
                    Line::raw(self.url.clone().unwrap_or_default()),
                ],
            ),
            _ => {
                let mut lines = vec![Line::styled("Waiting for the network...", bold)];
                if self.links.is_empty() {
                    lines.push(Line::raw("looking for network interfaces"));
                }
                for (name, l) in self.links.iter().take(4) {
                    let state = match (l.up, l.address, l.dhcp) {
                        (_, Some((a, p)), _) => format!("address {a}/{p}"),
                        (true, None, true) => "link up, asking DHCP".to_string(),
                        (true, None, false) => "link up".to_string(),
                        (false, ..) => "no link (cable?)".to_string(),
                    };
                    lines.push(Line::from(vec![
                        Span::styled(format!("{name}:"), Style::new().fg(Color::Cyan)),
                        Span::raw(format!(" {state}")),
                    ]));
                }
                ("Network", Color::Yellow, lines)
            }
        }
    }

    fn approval_panel(&self, area: Rect, buf: &mut Buffer) {
        let Some(a) = &self.approval else { return };
        let block = panel("Approve this machine", Color::Yellow);
        let inner = block.inner(area);
        block.render(area, buf);
        let text_rows = 2;
        let big_area = Rect {
            height: inner.height.saturating_sub(text_rows + 1),
            ..inner
        };
        let n = a.code.chars().count();
        let scale = BigText::fit(n, big_area);
        let w = BigText::width(n, scale);
        let h = BigText::height(scale);
        let big = Rect::new(
            inner.x + inner.width.saturating_sub(w) / 2,
            inner.y,
            w.min(inner.width),
            h,
        );
        let code_style = Style::new()
            .fg(Color::LightYellow)
            .add_modifier(Modifier::BOLD);
        BigText {
            text: &a.code,
            scale,
            style: code_style,
        }
        .render(big, buf);
        let left = self.approval_left_s().unwrap_or(0);
        let expiry = if left == 0 {
            Span::styled(
                "expired: a new code follows",
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            )
        } else {
            let color = if left < 60 { Color::Red } else { Color::Yellow };
            Span::styled(
                format!("expires in {}", mmss(left)),
                Style::new().fg(color).add_modifier(Modifier::BOLD),
            )
        };
        let mut first = vec![];
        if scale == 0 {
            first.push(Span::styled(format!("code {}  ", a.code), code_style));
        }
        first.push(expiry);
        let lines = vec![
            Line::from(first),
            Line::from(vec![
                Span::styled(
                    format!("kilnctl machines approve {}", a.code),
                    Style::new().add_modifier(Modifier::BOLD),
                ),
                Span::raw(format!("  ({})", a.server)),
            ]),
        ];
        let y = (big.bottom() + 1).min(inner.bottom().saturating_sub(text_rows));
        Paragraph::new(lines)
            .alignment(Alignment::Center)
            .render(Rect::new(inner.x, y, inner.width, text_rows), buf);
    }

    fn progress_panel(&self, area: Rect, buf: &mut Buffer) {
        let Some(p) = &self.progress else { return };
        let block = panel("Provisioning", Color::Green);
        let inner = block.inner(area);
        block.render(area, buf);
        let [summary, phases, _, gauge, figures, message] =
            Layout::vertical([Constraint::Length(1); 6]).areas(inner);
        let (kind, what) = self.order.clone().unwrap_or_default();
        Paragraph::new(Line::from(vec![
            Span::styled(
                format!("{} ", if kind.is_empty() { "provision" } else { &kind }),
                Style::new().add_modifier(Modifier::BOLD),
            ),
            Span::raw(what),
        ]))
        .render(summary, buf);
        let mut spans = vec![];
        for phase in PHASES {
            let (mark, style) = if phase == p.phase {
                (
                    "►",
                    Style::new()
                        .fg(Color::LightGreen)
                        .add_modifier(Modifier::BOLD),
                )
            } else if self.phases.contains(&phase) {
                ("√", Style::new().fg(Color::Green))
            } else {
                (" ", Style::new().fg(Color::DarkGray))
            };
            spans.push(Span::styled(format!("{mark}{} ", phase.name()), style));
        }
        Paragraph::new(Line::from(spans))
            .wrap(Wrap { trim: true })
            .render(phases, buf);
        let ratio = p
            .total
            .filter(|&t| t > 0)
            .map(|t| (p.done as f64 / t as f64).clamp(0.0, 1.0));
        Gauge::default()
            .gauge_style(Style::new().fg(Color::Green).bg(Color::Black))
            .ratio(ratio.unwrap_or(0.0))
            .label(ratio.map_or("-".into(), |r| format!("{:.0}%", r * 100.0)))
            .render(gauge, buf);
        let mut fig = human_bytes(p.done);
        if let Some(t) = p.total {
            fig.push_str(&format!(" of {}", human_bytes(t)));
        }
        if let Some(r) = p.rate.filter(|&r| r > 0.0) {
            fig.push_str(&format!("  {}/s", human_bytes(r as u64)));
            if let Some(t) = p.total {
                let eta = (t.saturating_sub(p.done) as f64 / r) as u64;
                fig.push_str(&format!("  about {} left", mmss(eta)));
            }
        }
        Paragraph::new(Line::from(vec![
            Span::styled(format!("{} ", p.phase.name()), Style::new().fg(Color::Cyan)),
            Span::raw(fig),
        ]))
        .render(figures, buf);
        Paragraph::new(p.message.as_str()).render(message, buf);
    }

    fn failure_panel(&self, area: Rect, buf: &mut Buffer) {
        let Some(f) = &self.failure else { return };
        let title = match f.phase {
            Some(p) => format!("FAILED in {p}"),
            None => "FAILED".to_string(),
        };
        let block = panel(&title, Color::Red);
        let retry = self.retry_left_s().unwrap_or(0);
        let lines = vec![
            Line::styled(
                f.error.clone(),
                Style::new()
                    .fg(Color::LightRed)
                    .add_modifier(Modifier::BOLD),
            ),
            Line::raw(if retry > 0 {
                format!("retrying in {retry} s")
            } else {
                "retrying now".to_string()
            }),
            Line::raw("type `shell` for a rescue shell on this console"),
        ];
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block)
            .render(area, buf);
    }

    fn log_panel(&self, area: Rect, buf: &mut Buffer) {
        let block = panel("Log", Color::DarkGray);
        let rows = block.inner(area).height as usize;
        let lines: Vec<Line> = self
            .log
            .iter()
            .skip(self.log.len().saturating_sub(rows))
            .map(|l| {
                let style = match l.level {
                    Level::Error => Style::new().fg(Color::LightRed),
                    Level::Warn => Style::new().fg(Color::Yellow),
                    Level::Debug => Style::new().fg(Color::DarkGray),
                    Level::Info => Style::new(),
                };
                Line::from(vec![
                    Span::styled(
                        format!("{:5}.{:01} ", l.uptime_ms / 1000, l.uptime_ms % 1000 / 100),
                        Style::new().fg(Color::DarkGray),
                    ),
                    Span::styled(l.text.clone(), style),
                ])
            })
            .collect();
        Paragraph::new(lines).block(block).render(area, buf);
    }
}

impl Widget for &State {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let info_h = 5;
        let avail = area.height.saturating_sub(1 + info_h + 1 + 4);
        let main_h = self.main_height(area.width, avail);
        let [header, info, main, log, footer] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(info_h),
            Constraint::Length(main_h),
            Constraint::Min(0),
            Constraint::Length(1),
        ])
        .areas(area);
        self.header(header, buf);
        // The control panel needs 42 columns inside for a machine UUID.
        let split = if area.width >= 100 {
            [Constraint::Percentage(50), Constraint::Percentage(50)]
        } else {
            [Constraint::Min(0), Constraint::Length(44)]
        };
        let [machine, control] = Layout::horizontal(split).areas(info);
        self.identity(machine, buf);
        self.control(control, buf);
        self.main_panel(main, buf);
        self.log_panel(log, buf);
        Paragraph::new(PROMPT)
            .style(Style::new().fg(Color::Black).bg(Color::Gray))
            .render(footer, buf);
    }
}
