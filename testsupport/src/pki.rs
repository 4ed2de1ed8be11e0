//! A throw-away PKI made with the openssl CLI: a test CA and a server certificate for
//! 127.0.0.1 it signed, for registries served over HTTPS.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A test CA and a server certificate for 127.0.0.1 signed by it (openssl CLI).
pub struct TestPki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Makes the CA and the server certificate in `dir`.
pub fn make_pki(dir: &Path) -> TestPki {
    let p = |n: &str| dir.join(n).display().to_string();
    ec_key(&p("ca.key"));
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        &p("ca.key"),
        "-subj",
        "/CN=kiln-test-ca",
        "-days",
        "2",
        "-out",
        &p("ca.pem"),
    ]);
    ec_key(&p("server.key"));
    openssl(&[
        "req",
        "-new",
        "-key",
        &p("server.key"),
        "-subj",
        "/CN=127.0.0.1",
        "-out",
        &p("server.csr"),
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p("server.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p("ext.cnf"),
        "-out",
        &p("server.pem"),
    ]);
    TestPki {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}

/// Runs `openssl ARGS`; panics with its stderr when it fails.
/// A new P-256 private key (PEM) at `out`.
pub(crate) fn ec_key(out: &str) {
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        out,
    ]);
}

pub(crate) fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl CLI");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
