//! Kiln's installer agent as a library: the binary in main.rs is a thin shell.

pub mod provision;
