//! The console user interface: sinks that render the agent's typed
//! [`crate::events::Event`]s. Today every console gets [`plain`] lines; the ratatui TUI
//! for displays will be another sink over the same events.

pub mod plain;
