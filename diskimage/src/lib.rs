//! Disk images for Kiln: [`qcow2`] streams a qcow2 file read front to back (as from an HTTP body)
//! into the raw disk, in bounded memory; [`checksum`] parses the checksums an operator gives for
//! a disk-image URL and verifies them while the bytes stream by.

pub mod checksum;
pub mod qcow2;
