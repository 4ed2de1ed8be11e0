//! QEMU test harness for the Kiln installer (see docs/testing.md).
