//! OCI registry client and the Kiln provisioning image format (see docs/image-format.md).
//!
//! - [`format`]: media types, layer-0 forms, settings from annotations, platform selection.
//! - [`compression`], [`single_file_tar`]: `Read` adapters turning layer 0 into disk bytes;
//!   [`tar_guard`]: bounds PAX headers and GNU long names before the `tar` crate buffers them.
//! - [`reference`]: image references with Docker's defaults.
//! - [`http`]: the one HTTP/TLS client builder (web PKI, extra CA, pinned CA, unverified).
//! - [`registry`]: the blocking registry client (auth, retries, mirrors, manifests);
//!   [`retry_after`]: `Retry-After` in seconds or as an HTTP-date; [`proxy`]: HTTP(S) proxies.
//! - [`blob`]: the verified, resumable blob stream; [`resolve`]: an image for one platform
//!   and its blobs as streams; [`prefetch`]: download-ahead; [`digest`]: digests and the
//!   hashing/verifying readers; [`pull`]: all layers as streams, the next one prefetching.
//! - [`push`], [`layout`], [`builder`]: writing images (used by `kiln-image`).

pub mod blob;
pub mod builder;
pub mod compression;
pub mod digest;
pub mod format;
pub mod http;
pub mod layout;
pub mod prefetch;
pub mod progress;
pub mod proxy;
pub mod pull;
pub mod push;
pub mod reference;
pub mod registry;
pub mod resolve;
pub mod retry_after;
pub mod single_file_tar;
pub mod tar_guard;
