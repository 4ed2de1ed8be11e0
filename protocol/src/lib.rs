//! Versioned protocol types shared by the agent and the control plane (see docs/protocol.md).
