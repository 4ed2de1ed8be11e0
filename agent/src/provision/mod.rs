//! The provisioning engine: disk choice, layer 0 to disk, partition resize, root
//! filesystem, layer extraction, cloud-init and agent injection, boot plan.
//!
//! Not built yet (issue 5).
