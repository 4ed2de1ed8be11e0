//! OCI registry client and the Kiln provisioning image format (see docs/image-format.md).
