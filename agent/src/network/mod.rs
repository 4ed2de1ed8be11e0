//! Network bring-up in the installer: links, DHCPv4, static `ip=`, DNS and the clock.
//!
//! Not built yet (issue 3).
