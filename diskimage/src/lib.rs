//! Disk images for Kiln: [`qcow2`] streams a qcow2 file read front to back (as from an HTTP body)
//! into the raw disk, in bounded memory; [`checksum`] parses the checksums an operator gives for
//! a disk-image URL and verifies them while the bytes stream by.
//!
//! The chain a caller (the agent's disk-URL path) builds: the HTTP body, then
//! [`checksum::HashingReader`], then, when [`qcow2::is_qcow2`] says so of the first bytes,
//! [`qcow2::extents`] (check the target's size at [`qcow2::Event::Header`]; hold back the events
//! for the first MiB of the disk until [`checksum::HashingReader::verdict`] is `Ok`, which it can
//! be once `extents` returns: it reads its input to the end) or [`qcow2::convert`] straight into
//! the device.

pub mod checksum;
pub mod qcow2;
