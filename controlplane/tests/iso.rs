//! A real ISO template made by `scripts/build-iso --template` (with a stand-in kernel, so it
//! takes about a second), patched by [`kiln_controlplane::iso`], read back with xorriso:
//! grub.cfg in the ISO 9660 tree carries exactly the baked parameters and stays valid GRUB
//! script. Needs grub-mkrescue, xorriso and grub-script-check (scripts/setup).

use kiln_controlplane::iso::{self, PLACEHOLDER_LEN};
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// grub.cfg as stored in the ISO.
fn grub_cfg(iso: &Path, dir: &Path) -> String {
    let out = dir.join("grub.cfg");
    let _ = std::fs::remove_file(&out);
    run(Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(iso)
        .args(["-extract", "/boot/grub/grub.cfg"])
        .arg(&out));
    let text = std::fs::read_to_string(&out).unwrap();
    // The extracted copy is read-only; the next extraction overwrites it.
    let _ = std::fs::remove_file(&out);
    text
}

fn linux_line(cfg: &str) -> &str {
    cfg.lines()
        .find(|l| l.trim_start().starts_with("linux "))
        .expect("grub.cfg has a linux line")
}

fn script_check(cfg: &str, dir: &Path) {
    let p = dir.join("check.cfg");
    std::fs::write(&p, cfg).unwrap();
    run(Command::new("grub-script-check").arg(&p));
}

#[test]
fn build_iso_template_patch_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinuz");
    std::fs::write(&kernel, vec![0x90u8; 300_000]).unwrap();
    let template = dir.path().join("template.iso");
    run(Command::new(workspace().join("scripts/build-iso"))
        .args(["--template", "--cmdline", "panic=-1", "--kernel"])
        .arg(&kernel)
        .arg("--out")
        .arg(&template));

    let cfg = grub_cfg(&template, dir.path());
    let line = linux_line(&cfg);
    let (before, ph) = line.split_once('#').expect("placeholder comment");
    assert_eq!(
        before.trim(),
        "linux /kiln/vmlinuz console=tty0 console=ttyS0,115200 panic=-1"
    );
    assert_eq!(ph.len() + 1, PLACEHOLDER_LEN, "{ph}");
    script_check(&cfg, dir.path());

    let params = vec![
        "kiln.url=https://cp.kiln.test:8443".to_string(),
        format!("kiln.ca=sha256:{}", "ab".repeat(32)),
        format!("kiln.token={}", "eyJhbGciOiJkaXIi.x-y_z".repeat(20)),
    ];
    let patched = dir.path().join("patched.iso");
    iso::patch_file(&template, &patched, &params).unwrap();
    assert_eq!(
        std::fs::metadata(&patched).unwrap().len(),
        std::fs::metadata(&template).unwrap().len()
    );
    let cfg2 = grub_cfg(&patched, dir.path());
    let line2 = linux_line(&cfg2);
    assert_eq!(line2.len(), line.len(), "the line keeps its length");
    assert_eq!(
        line2.trim_end(),
        format!(
            "  linux /kiln/vmlinuz console=tty0 console=ttyS0,115200 panic=-1 {}",
            params.join(" ")
        )
    );
    // Nothing else in grub.cfg changed, and it is still valid GRUB script.
    assert_eq!(cfg.replace(line, ""), cfg2.replace(line2, ""));
    script_check(&cfg2, dir.path());

    // A patched ISO is not a template any more; too long parameters do not fit.
    let err = iso::patch_file(&patched, &dir.path().join("x.iso"), &params).unwrap_err();
    assert!(
        err.to_string().contains("no #KILN-PARAMS placeholder"),
        "{err}"
    );
    let long = vec![format!("kiln.token={}", "a".repeat(PLACEHOLDER_LEN))];
    let err = iso::patch_file(&template, &dir.path().join("x.iso"), &long).unwrap_err();
    assert!(err.to_string().contains("has room for"), "{err}");
}
