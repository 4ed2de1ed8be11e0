//! `/proc/self/mountinfo` (proc(5)), parsed once for everyone: PID 1 reports what is
//! mounted, disk choice refuses disks with mounted partitions.

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `major:minor` of the mounted device.
    pub dev: String,
    /// Mount point.
    pub target: String,
    /// Filesystem type.
    pub fstype: String,
    /// Mount source (`/dev/sda2`, `proc`).
    pub source: String,
}

/// Parses mountinfo text. Fields: 3rd is `major:minor`, 5th the mount point; after the
/// ` - ` separator come the type and the source. Octal escapes (`\040` for a space) are
/// decoded; lines that do not parse are skipped.
pub fn parse(text: &str) -> Vec<Entry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            if sep < 5 || fields.len() < sep + 3 {
                return None;
            }
            Some(Entry {
                dev: fields[2].to_string(),
                target: unescape_octal(fields[4]),
                fstype: fields[sep + 1].to_string(),
                source: unescape_octal(fields[sep + 2]),
            })
        })
        .collect()
}

/// Decodes the kernel's `\ooo` octal escapes (mountinfo, /proc/swaps).
pub fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let text = "\
1 1 0:2 / / rw - rootfs rootfs rw
22 1 0:20 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw
24 1 0:5 / /dev rw,nosuid - devtmpfs devtmpfs rw,size=1000k,mode=755
40 1 8:33 / /mnt/my\\040disk rw shared:7 master:1 - ext4 /dev/sdc1 rw
garbage line
short - x
";
        let parsed = parse(text);
        let got: Vec<(&str, &str, &str, &str)> = parsed
            .iter()
            .map(|e| {
                (
                    e.dev.as_str(),
                    e.target.as_str(),
                    e.fstype.as_str(),
                    e.source.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("0:2", "/", "rootfs", "rootfs"),
                ("0:20", "/proc", "proc", "proc"),
                ("0:5", "/dev", "devtmpfs", "devtmpfs"),
                ("8:33", "/mnt/my disk", "ext4", "/dev/sdc1"),
            ]
        );
    }

    #[test]
    fn octal() {
        assert_eq!(unescape_octal(r"a\040b\134c"), r"a b\c");
        assert_eq!(unescape_octal(r"end\04"), r"end\04");
        assert_eq!(unescape_octal(r"\999"), r"\999");
    }
}
