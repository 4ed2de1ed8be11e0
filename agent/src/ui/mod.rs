//! The console user interface: sinks that render the agent's typed
//! [`crate::events::Event`]s. Serial (and other non-display) consoles get [`plain`] lines;
//! a display console gets the full-screen [`tui`] unless `kiln.ui=plain`.

pub mod plain;
pub mod tui;
