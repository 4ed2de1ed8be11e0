//! Test support for Kiln's crates (a dev-dependency only): services the root and VM tests
//! run for real on 127.0.0.1, each torn down by a Drop guard.
//!
//! - [`registry`]: a real `docker-registry` in a temp dir, and a kiln-oci client for it.
//! - [`token`]: a token server for the registry's bearer-token auth.
//! - [`pki`]: a test CA and a server certificate for 127.0.0.1 (HTTPS registries).
//! - [`proxy`]: a fault-injecting proxy between client and registry.
//! - [`forward_proxy`]: an HTTP forward proxy (`CONNECT` and absolute-form requests).
//! - [`image`]: a small test image built with kiln-oci's builder.
//! - [`server`]: a real `kiln-server` process with its data in a temp dir.

mod http;
mod net;

pub mod forward_proxy;
pub mod image;
pub mod pki;
pub mod proxy;
pub mod registry;
pub mod server;
pub mod token;

pub use net::free_port;
