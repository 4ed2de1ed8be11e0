//! The full-screen TUI on display consoles (a VT on a framebuffer or in VGA text mode).
//!
//! Structure: [`state::State`] folds the typed events (pure), [`view`] draws a `&State`
//! as a ratatui widget, [`font`] has the big glyphs for the approval code. This module
//! is the plumbing: [`TuiSink`] hands every record over a channel to one render thread
//! per display (the [`crate::events::Reporter`] never waits for drawing), which redraws
//! after each burst of events and on a 1 s tick (countdowns, uptime, a changed console
//! size), and repaints the whole screen every 30 s to wipe kernel messages and echoed
//! typing. If drawing fails or panics, the thread falls back to plain lines on that
//! console. [`Displays::hand_over`] stops drawing while a rescue shell owns the console.
//!
//! Kernel messages would scroll the screen: while the TUI draws, they go to VT 2
//! (`TIOCL_SETKMSGREDIRECT`) and still to serial consoles and dmesg.
//!
//! Backend: ratatui's termion backend writing to the VT device; the size comes from
//! `TIOCGWINSZ` on that device (a fixed viewport, so nothing queries stdout).

pub mod font;
pub mod state;
pub mod view;

use crate::events::{Level, Record, Sink};
use ratatui::backend::{Backend, ClearType, TermionBackend, WindowSize};
use ratatui::buffer::Cell;
use ratatui::layout::{Position, Rect, Size};
use ratatui::{Terminal, TerminalOptions, Viewport};
use state::{LogLine, State};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// Redraw period when no events arrive.
const TICK: Duration = Duration::from_secs(1);
/// Full repaint period.
const REPAINT: Duration = Duration::from_secs(30);

enum Msg {
    Record(Box<Record>),
    /// Stop drawing, give the console back in a sane state, then acknowledge.
    Pause(Sender<()>),
    Resume,
}

/// The sink feeding one display's render thread.
pub struct TuiSink {
    tx: Sender<Msg>,
}

impl Sink for TuiSink {
    fn record(&mut self, record: &Record) {
        // Never blocks; a render thread that is gone just stops getting records.
        let _ = self.tx.send(Msg::Record(Box::new(record.clone())));
    }
}

/// The running TUIs, by console device path, for pausing them.
#[derive(Clone, Default)]
pub struct Displays(Arc<Vec<(String, Sender<Msg>)>>);

/// While alive, the TUI on that console does not draw. Dropping it resumes drawing.
pub struct HandOver(Option<Sender<Msg>>);

impl Drop for HandOver {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(Msg::Resume);
        }
    }
}

impl Displays {
    pub fn new(list: Vec<(String, TuiHandle)>) -> Self {
        Displays(Arc::new(list.into_iter().map(|(n, h)| (n, h.0)).collect()))
    }

    /// The console device paths that show a TUI.
    pub fn names(&self) -> Vec<String> {
        self.0.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Stops the TUI on `tty` (`/dev/tty0`) if there is one, waiting (up to 2 s) until it
    /// has restored the console: cursor shown, colours reset, screen cleared.
    pub fn hand_over(&self, tty: &str) -> HandOver {
        let Some((_, tx)) = self.0.iter().find(|(n, _)| n == tty) else {
            return HandOver(None);
        };
        let (ack_tx, ack_rx) = mpsc::channel();
        if tx.send(Msg::Pause(ack_tx)).is_err() {
            return HandOver(None);
        }
        let _ = ack_rx.recv_timeout(Duration::from_secs(2));
        HandOver(Some(tx.clone()))
    }
}

/// A render thread's control handle (see [`Displays`]).
pub struct TuiHandle(Sender<Msg>);

/// Opens `tty` (`/dev/tty0`), checks it has a size, and starts its render thread.
pub fn start(tty: &str, min_level: Level) -> anyhow::Result<(TuiSink, TuiHandle)> {
    use anyhow::Context as _;
    let out = std::fs::OpenOptions::new()
        .write(true)
        .open(tty)
        .with_context(|| format!("opening {tty}"))?;
    let size = size_of(&out).with_context(|| format!("reading the size of {tty}"))?;
    if size.width < 40 || size.height < 12 {
        anyhow::bail!(
            "{tty} is {}x{}, too small for the TUI",
            size.width,
            size.height
        );
    }
    let (tx, rx) = mpsc::channel();
    let name = tty.to_string();
    std::thread::Builder::new()
        .name(format!("tui-{}", tty.trim_start_matches("/dev/")))
        .spawn(move || render_thread(out, rx, min_level, &name))
        .with_context(|| format!("starting the TUI thread for {tty}"))?;
    Ok((TuiSink { tx: tx.clone() }, TuiHandle(tx)))
}

fn size_of(f: &File) -> std::io::Result<Rect> {
    let ws = rustix::termios::tcgetwinsize(f)?;
    Ok(Rect::new(0, 0, ws.ws_col, ws.ws_row))
}

/// The MAC address of `ifname` from sysfs.
fn read_mac(ifname: &str) -> Option<String> {
    let mac = std::fs::read_to_string(format!("/sys/class/net/{ifname}/address")).ok()?;
    let mac = mac.trim();
    (!mac.is_empty() && mac != "00:00:00:00:00:00").then(|| mac.to_string())
}

/// ratatui's termion backend with the size read from the VT device itself (termion asks
/// stdout, which is /dev/console, often the serial port) and the cursor position
/// remembered rather than queried (a query waits for the terminal to answer on stdin).
struct VtBackend {
    inner: TermionBackend<BufWriter<File>>,
    device: File,
    cursor: Position,
}

impl Backend for VtBackend {
    type Error = std::io::Error;

    fn draw<'a, I>(&mut self, content: I) -> std::io::Result<()>
    where
        I: Iterator<Item = (u16, u16, &'a Cell)>,
    {
        self.inner.draw(content)
    }
    fn hide_cursor(&mut self) -> std::io::Result<()> {
        self.inner.hide_cursor()
    }
    fn show_cursor(&mut self) -> std::io::Result<()> {
        self.inner.show_cursor()
    }
    fn get_cursor_position(&mut self) -> std::io::Result<Position> {
        Ok(self.cursor)
    }
    fn set_cursor_position<P: Into<Position>>(&mut self, position: P) -> std::io::Result<()> {
        self.cursor = position.into();
        self.inner.set_cursor_position(self.cursor)
    }
    fn clear(&mut self) -> std::io::Result<()> {
        self.inner.clear()
    }
    fn clear_region(&mut self, clear_type: ClearType) -> std::io::Result<()> {
        self.inner.clear_region(clear_type)
    }
    fn size(&self) -> std::io::Result<Size> {
        size_of(&self.device).map(|r| r.as_size())
    }
    fn window_size(&mut self) -> std::io::Result<WindowSize> {
        Ok(WindowSize {
            columns_rows: self.size()?,
            pixels: Size::default(),
        })
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Backend::flush(&mut self.inner)
    }
}

/// The VT (numbered from 1) that gets the kernel's console messages while the TUI runs.
const KMSG_VT: u8 = 2;

/// Sends the kernel's console messages to VT `vt` (0: back to the foreground VT), so
/// printk lines do not scroll the TUI away; they still reach the serial consoles, dmesg
/// and that VT (Alt-F2). Needs CAP_SYS_ADMIN; `vt_fd` must be a VT.
fn kmsg_redirect(vt_fd: &File, vt: u8) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    const TIOCL_SETKMSGREDIRECT: u8 = 11;
    let mut arg = [TIOCL_SETKMSGREDIRECT, vt];
    // SAFETY: TIOCLINUX with this subcode reads two bytes from `arg`, which outlives the
    // call; the fd is open for the duration of the borrow.
    let r = unsafe { libc::ioctl(vt_fd.as_raw_fd(), libc::TIOCLINUX, arg.as_mut_ptr()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One display: the terminal, or plain lines once drawing failed.
struct Screen {
    out: File,
    /// The VT kernel messages are redirected to (kept open: it must stay allocated),
    /// when the display is a VT and the redirection worked.
    kmsg_vt: Option<File>,
    term: Option<Terminal<VtBackend>>,
    last_repaint: Instant,
}

/// VT setup: UTF-8 mode, no screen blanking or powerdown, cursor hidden, screen cleared.
const VT_SETUP: &str = "\x1b%G\x1b[9;0]\x1b[14;0]\x1b[?25l\x1b[0m\x1b[2J";
/// Back to a usable console: attributes reset, screen cleared, cursor home and shown.
const VT_RESTORE: &str = "\x1b[0m\x1b[2J\x1b[H\x1b[?25h";

impl Screen {
    fn open(out: File, tty: &str) -> std::io::Result<Screen> {
        let area = size_of(&out)?;
        let is_vt =
            crate::console::kind_of(tty.trim_start_matches("/dev/")) == crate::console::Kind::Vt;
        // Opening the VT allocates it, which the redirection needs.
        let kmsg_vt = is_vt
            .then(|| std::fs::File::open(format!("/dev/tty{KMSG_VT}")).ok())
            .flatten()
            .filter(|_| kmsg_redirect(&out, KMSG_VT).is_ok());
        let mut s = Screen {
            kmsg_vt,
            term: None,
            last_repaint: Instant::now(),
            out,
        };
        s.out.write_all(VT_SETUP.as_bytes())?;
        let backend = VtBackend {
            // One write per frame, not one per cell.
            inner: TermionBackend::new(BufWriter::with_capacity(1 << 16, s.out.try_clone()?)),
            device: s.out.try_clone()?,
            cursor: Position::ORIGIN,
        };
        s.term = Some(Terminal::with_options(
            backend,
            TerminalOptions {
                viewport: Viewport::Fixed(area),
            },
        )?);
        Ok(s)
    }

    fn draw(&mut self, state: &State) -> std::io::Result<()> {
        let Some(term) = &mut self.term else {
            return Ok(());
        };
        let area = size_of(&self.out)?;
        if area != term.get_frame().area() {
            term.resize(area)?;
        }
        if self.last_repaint.elapsed() >= REPAINT {
            term.clear()?;
            self.last_repaint = Instant::now();
        }
        term.draw(|frame| {
            let area = frame.area();
            frame.render_widget(state, area);
            frame.set_cursor_position(view::prompt_position(area));
        })?;
        Ok(())
    }

    /// Gives the console back (shell hand-over, fallback), kernel messages included.
    fn restore(&mut self) {
        if self.kmsg_vt.is_some() {
            let _ = kmsg_redirect(&self.out, 0);
        }
        let _ = self.out.write_all(VT_RESTORE.as_bytes());
    }

    fn resume(&mut self) {
        if self.kmsg_vt.is_some() {
            let _ = kmsg_redirect(&self.out, KMSG_VT);
        }
        let _ = self.out.write_all(VT_SETUP.as_bytes());
        if let Some(term) = &mut self.term {
            // Forget what was on screen: the next draw writes every cell.
            let _ = term.clear();
        }
    }

    /// Switches to plain lines for good, after `why`, replaying the recent log.
    fn fall_back(&mut self, why: &str, state: &State) {
        self.term = None;
        self.restore();
        self.kmsg_vt = None;
        let _ = writeln!(
            self.out,
            "kiln-agent: the TUI stopped ({why}); plain lines from here"
        );
        for l in state.log.iter().skip(state.log.len().saturating_sub(10)) {
            self.plain(l);
        }
    }

    fn plain(&mut self, l: &LogLine) {
        let record = Record {
            schema: crate::events::SCHEMA_VERSION,
            seq: 0,
            uptime_ms: l.uptime_ms,
            level: l.level,
            event: crate::events::Event::Message {
                level: l.level,
                text: l.text.clone(),
            },
        };
        let _ = writeln!(self.out, "{}", super::plain::render(&record));
    }
}

fn render_thread(out: File, rx: Receiver<Msg>, min_level: Level, tty: &str) {
    let mut state = State::new(min_level);
    let fallback = out.try_clone().ok();
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let mut screen = match Screen::open(out, tty) {
            Ok(s) => Some(s),
            Err(e) => {
                if let Some(mut f) = fallback.as_ref().and_then(|f| f.try_clone().ok()) {
                    let _ = writeln!(f, "kiln-agent: no TUI on {tty} ({e}); plain lines");
                }
                None
            }
        };
        run(&mut screen, &rx, &mut state, fallback.as_ref())
    }));
    if outcome.is_err() {
        // Drawing panicked: plain lines on this console for the rest of the run.
        let Some(mut out) = fallback else { return };
        let _ = kmsg_redirect(&out, 0);
        let _ = out.write_all(VT_RESTORE.as_bytes());
        let _ = writeln!(
            out,
            "kiln-agent: the TUI on {tty} failed; plain lines from here"
        );
        for msg in rx.iter() {
            if let Msg::Record(r) = msg
                && r.level >= min_level
            {
                let _ = writeln!(out, "{}", super::plain::render(&r));
            }
        }
    }
}

fn run(
    screen: &mut Option<Screen>,
    rx: &Receiver<Msg>,
    state: &mut State,
    plain_out: Option<&File>,
) {
    let mut paused = false;
    let mut next_tick = Instant::now() + TICK;
    loop {
        let first = match rx.recv_timeout(next_tick.saturating_duration_since(Instant::now())) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        for msg in first.into_iter().chain(rx.try_iter()) {
            match msg {
                Msg::Record(r) => {
                    state.apply(&r);
                    if let crate::events::Event::Network {
                        detail:
                            crate::network::NetEvent::LinkUp { ifname, .. }
                            | crate::network::NetEvent::AddressApplied { ifname, .. },
                    } = &r.event
                        && let Some(mac) = read_mac(ifname)
                    {
                        state.set_mac(ifname, mac);
                    }
                    let drawing = screen.as_ref().is_some_and(|s| s.term.is_some());
                    if !drawing
                        && !paused
                        && r.level >= state.min_level
                        && let Some(mut out) = plain_out
                    {
                        let _ = writeln!(out, "{}", super::plain::render(&r));
                    }
                }
                Msg::Pause(ack) => {
                    paused = true;
                    if let Some(s) = screen {
                        s.restore();
                    }
                    let _ = ack.send(());
                }
                Msg::Resume => {
                    paused = false;
                    if let Some(s) = screen {
                        s.resume();
                    }
                }
            }
        }
        if Instant::now() >= next_tick {
            next_tick = Instant::now() + TICK;
        }
        state.tick(crate::events::since_boot().as_millis() as u64);
        if paused {
            continue;
        }
        if let Some(s) = screen
            && s.term.is_some()
            && let Err(e) = s.draw(state)
        {
            s.fall_back(&e.to_string(), state);
        }
    }
}

#[cfg(test)]
mod tests;
