//! The Kiln control plane: server, storage and API (see docs/protocol.md).
