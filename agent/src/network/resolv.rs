//! `/etc/resolv.conf` and `/etc/hostname`, rendered as text and written under a root
//! directory (`/` in the installer, a temp dir in tests).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::Context;

/// musl and glibc read at most three `nameserver` lines.
pub const MAX_NAMESERVERS: usize = 3;

/// The resolv.conf text for `servers` and `search`.
pub fn render(servers: &[Ipv4Addr], search: &[String]) -> String {
    let mut s = String::from("# Written by kiln-agent\n");
    for ns in servers.iter().take(MAX_NAMESERVERS) {
        let _ = writeln!(s, "nameserver {ns}");
    }
    if !search.is_empty() {
        let _ = writeln!(s, "search {}", search.join(" "));
    }
    s
}

/// Writes `<root>/etc/resolv.conf` atomically.
pub fn write(root: &Path, servers: &[Ipv4Addr], search: &[String]) -> anyhow::Result<()> {
    write_atomic(&root.join("etc/resolv.conf"), &render(servers, search))
}

/// Writes `<root>/etc/hostname`.
pub fn write_hostname(root: &Path, name: &str) -> anyhow::Result<()> {
    write_atomic(&root.join("etc/hostname"), &format!("{name}\n"))
}

fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().context("path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension("kiln-tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_writes() {
        let ns: Vec<Ipv4Addr> = ["192.0.2.53", "192.0.2.54", "192.0.2.55", "192.0.2.56"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let text = render(&ns, &["lab.example".into(), "example".into()]);
        assert_eq!(
            text,
            "# Written by kiln-agent\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n\
             nameserver 192.0.2.55\nsearch lab.example example\n"
        );
        assert_eq!(render(&[], &[]), "# Written by kiln-agent\n");
        let t = tempfile::tempdir().unwrap();
        write(t.path(), &ns[..1], &[]).unwrap();
        write_hostname(t.path(), "node7").unwrap();
        assert!(
            std::fs::read_to_string(t.path().join("etc/resolv.conf"))
                .unwrap()
                .contains("nameserver 192.0.2.53\n")
        );
        assert_eq!(
            std::fs::read_to_string(t.path().join("etc/hostname")).unwrap(),
            "node7\n"
        );
    }
}
