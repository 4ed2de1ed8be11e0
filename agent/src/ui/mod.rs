//! The console user interface: plain log lines on serial consoles today, the ratatui
//! TUI on a display later. Every sink renders the same typed [`crate::events::Event`]s.
