//! The hardware inventory sent at registration ([`kiln_protocol::Inventory`]): SMBIOS from
//! `/sys/class/dmi/id`, CPU from `/proc/cpuinfo`, memory from `/proc/meminfo`, firmware from
//! `/sys/firmware/efi`, disks from the provisioning engine's sysfs inventory
//! ([`crate::provision::disk`]) and NICs from the network's ([`crate::network::inventory`]).
//! Parsers take text; [`collect`] does the reading.

use std::path::Path;

use kiln_protocol::{Disk, Inventory, Nic};

/// CPU model and logical CPU count from `/proc/cpuinfo` (x86 `model name`; ARM `Hardware`
/// or `CPU part` when there is no model name).
pub fn parse_cpuinfo(text: &str) -> (Option<String>, u32) {
    let mut model = None;
    let mut fallback = None;
    let mut cores = 0u32;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        match k {
            "processor" => cores += 1,
            "model name" if model.is_none() && !v.is_empty() => model = Some(v.to_string()),
            "Hardware" | "cpu model" | "uarch" if fallback.is_none() && !v.is_empty() => {
                fallback = Some(v.to_string())
            }
            _ => {}
        }
    }
    (model.or(fallback), cores)
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix("MemTotal:")?.trim();
        let kb: u64 = rest
            .strip_suffix("kB")
            .unwrap_or(rest)
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    })
}

/// An SMBIOS string, or `None` for the placeholders vendors leave in unset fields.
pub fn clean_dmi(value: &str) -> Option<String> {
    const PLACEHOLDERS: &[&str] = &[
        "",
        "to be filled by o.e.m.",
        "default string",
        "not specified",
        "not applicable",
        "none",
        "system serial number",
        "system product name",
        "system manufacturer",
        "0123456789",
        "00000000-0000-0000-0000-000000000000",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
        "03000200-0400-0500-0006-000700080009",
    ];
    let v = value.trim();
    let lower = v.to_ascii_lowercase();
    (!PLACEHOLDERS.contains(&lower.as_str())).then(|| v.to_string())
}

/// `/proc/sys/kernel/hostname`, unless it is unset (`(none)`, `localhost`).
pub fn clean_hostname(value: &str) -> Option<String> {
    let v = value.trim();
    (!v.is_empty() && v != "(none)" && v != "localhost").then(|| v.to_string())
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

/// Reads the inventory of this machine. Missing sources leave fields empty: an inventory
/// is never a reason not to register.
pub fn collect() -> Inventory {
    let dmi = |f: &str| read(&Path::new("/sys/class/dmi/id").join(f)).and_then(|v| clean_dmi(&v));
    let (cpu_model, cpu_cores) = read(Path::new("/proc/cpuinfo"))
        .map(|t| parse_cpuinfo(&t))
        .unwrap_or((None, 0));
    let cpu_cores = if cpu_cores == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
    } else {
        cpu_cores
    };
    let disks = crate::provision::disk::inventory_system()
        .unwrap_or_default()
        .into_iter()
        .map(|d| Disk {
            name: d.name,
            size_bytes: d.size,
            model: d.model,
            serial: d.serial,
            rotational: d.rotational,
        })
        .collect();
    let nics = crate::network::inventory::nics(&crate::network::inventory::sysfs_root())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| {
            Some(Nic {
                mac: n.mac?.to_string(),
                name: n.name,
                speed_mbps: n.speed_mbps,
            })
        })
        .collect();
    Inventory {
        hostname: read(Path::new("/proc/sys/kernel/hostname")).and_then(|h| clean_hostname(&h)),
        arch: std::env::consts::ARCH.to_string(),
        firmware: Some(
            if Path::new("/sys/firmware/efi").exists() {
                "uefi"
            } else {
                "bios"
            }
            .to_string(),
        ),
        cpu_model,
        cpu_cores,
        memory_bytes: read(Path::new("/proc/meminfo"))
            .and_then(|t| parse_meminfo(&t))
            .unwrap_or(0),
        system_vendor: dmi("sys_vendor"),
        system_product: dmi("product_name"),
        system_serial: dmi("product_serial"),
        system_uuid: dmi("product_uuid").map(|u| u.to_ascii_lowercase()),
        disks,
        nics,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_table() {
        let x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz\n\n\
                   processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz\n";
        let arm = "processor\t: 0\nBogoMIPS\t: 50.00\nCPU part\t: 0xd0c\n\nprocessor\t: 1\n\nHardware\t: Ampere Altra\n";
        let qemu = "processor\t: 0\nmodel name\t: QEMU Virtual CPU version 2.5+\n";
        let cases: &[(&str, Option<&str>, u32)] = &[
            (x86, Some("Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"), 2),
            (arm, Some("Ampere Altra"), 2),
            (qemu, Some("QEMU Virtual CPU version 2.5+"), 1),
            ("", None, 0),
        ];
        for (text, model, cores) in cases {
            let (m, c) = parse_cpuinfo(text);
            assert_eq!(m.as_deref(), *model, "{text}");
            assert_eq!(c, *cores, "{text}");
        }
    }

    #[test]
    fn meminfo_table() {
        for (text, want) in [
            (
                "MemTotal:        8131620 kB\nMemFree:  1 kB\n",
                Some(8131620 * 1024),
            ),
            ("MemFree: 1 kB\nMemTotal: 2048 kB", Some(2048 * 1024)),
            ("MemTotal: lots", None),
            ("", None),
        ] {
            assert_eq!(parse_meminfo(text), want, "{text}");
        }
    }

    #[test]
    fn dmi_and_hostname_placeholders() {
        for (v, want) in [
            ("QEMU\n", Some("QEMU")),
            ("To Be Filled By O.E.M.\n", None),
            ("Default string", None),
            ("  ", None),
            ("03000200-0400-0500-0006-000700080009\n", None),
            (
                "4C4C4544-0042-3510-8052-B4C04F563732\n",
                Some("4C4C4544-0042-3510-8052-B4C04F563732"),
            ),
        ] {
            assert_eq!(clean_dmi(v).as_deref(), want, "{v:?}");
        }
        for (v, want) in [
            ("(none)\n", None),
            ("node-7\n", Some("node-7")),
            ("localhost", None),
        ] {
            assert_eq!(clean_hostname(v).as_deref(), want, "{v:?}");
        }
    }

    #[test]
    fn collect_on_this_machine_has_the_basics() {
        let inv = collect();
        assert_eq!(inv.arch, std::env::consts::ARCH);
        assert!(inv.cpu_cores >= 1);
        assert!(inv.memory_bytes > 0);
        assert!(matches!(inv.firmware.as_deref(), Some("uefi" | "bios")));
    }
}
