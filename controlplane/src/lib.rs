//! The Kiln control plane: server, storage and API (see docs/controlplane.md and
//! docs/protocol.md). `kiln-server` and `kilnctl` are thin binaries over these modules.

pub mod api;
pub mod approval;
pub mod client;
pub mod cloudinit;
pub mod db;
pub mod iso;
pub mod jwe;
pub mod kilnctl;
pub mod metrics;
pub mod ratelimit;
pub mod secrets;
pub mod server;
pub mod smbios;
pub mod tls;
pub mod tokens;
pub mod web;
