//! Secrets: the master key (seals registry credentials and token keys at rest), random
//! credentials (API keys, machine credentials) and their hashes.
//!
//! Sealing is AES-256-GCM with a random 96-bit nonce and the owning object's id as associated
//! data, so a sealed value copied to another row does not open. Credentials are 256 random
//! bits, so a plain SHA-256 is the right hash (no password stretching needed).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::path::Path;

/// Environment variable that may carry the master key (base64 of 32 bytes). Replicas sharing
/// a PostgreSQL database must share it.
pub const MASTER_KEY_ENV: &str = "KILN_MASTER_KEY";

/// The server's master key.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MasterKey(bytes)
    }

    /// Reads the key from `$KILN_MASTER_KEY`, else from `master.key` in `data_dir`, creating
    /// that file (mode 0600) on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<MasterKey> {
        if let Ok(text) = std::env::var(MASTER_KEY_ENV) {
            return Self::parse(&text).with_context(|| format!("parsing ${MASTER_KEY_ENV}"));
        }
        let path = data_dir.join("master.key");
        if path.exists() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            return Self::parse(&text).with_context(|| format!("parsing {}", path.display()));
        }
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        write_private(&path, format!("{}\n", STANDARD.encode(key)).as_bytes())?;
        Ok(MasterKey(key))
    }

    fn parse(text: &str) -> Result<MasterKey> {
        let bytes = STANDARD
            .decode(text.trim())
            .context("master key is not base64")?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| anyhow::anyhow!("master key has {} bytes, want 32", b.len()))?;
        Ok(MasterKey(key))
    }

    /// Seals `plain` bound to `context` (the owning row's id). Output: base64(nonce||ct||tag).
    pub fn seal(&self, context: &str, plain: &[u8]) -> String {
        let cipher = Aes256Gcm::new((&self.0).into());
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: context.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        STANDARD.encode(out)
    }

    /// Opens a value made by [`MasterKey::seal`] with the same `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>> {
        let bytes = STANDARD
            .decode(sealed)
            .context("sealed value is not base64")?;
        if bytes.len() < 12 + 16 {
            bail!("sealed value for {context} is truncated");
        }
        let cipher = Aes256Gcm::new((&self.0).into());
        cipher
            .decrypt(
                Nonce::from_slice(&bytes[..12]),
                Payload {
                    msg: &bytes[12..],
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| {
                anyhow::anyhow!(
                    "cannot open sealed value for {context}: wrong master key or corrupted data"
                )
            })
    }
}

/// Writes `data` to `path` readable by the owner only.
pub fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(data)
        .with_context(|| format!("writing {}", path.display()))
}

/// A new random credential: `prefix` followed by 256 random bits in base64url.
pub fn new_credential(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Hex SHA-256 of a credential, the only form in which credentials are stored.
pub fn hash_credential(credential: &str) -> String {
    hex::encode(Sha256::digest(credential.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_binding() {
        let key = MasterKey::from_bytes([7; 32]);
        let sealed = key.seal("cred-1", b"hunter2");
        assert!(!sealed.contains("hunter2"));
        assert_eq!(key.open("cred-1", &sealed).unwrap(), b"hunter2");
        let err = key.open("cred-2", &sealed).unwrap_err().to_string();
        assert!(err.contains("cred-2"), "{err}");
        let other = MasterKey::from_bytes([8; 32]);
        assert!(other.open("cred-1", &sealed).is_err());
        assert!(key.open("cred-1", "AAAA").is_err());
    }

    #[test]
    fn master_key_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = MasterKey::load_or_create(dir.path()).unwrap();
        let b = MasterKey::load_or_create(dir.path()).unwrap();
        assert_eq!(a.0, b.0);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("master.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn credentials_are_random_and_hashed() {
        let a = new_credential("kiln_");
        let b = new_credential("kiln_");
        assert_ne!(a, b);
        assert!(a.starts_with("kiln_") && a.len() == 5 + 43);
        assert_eq!(hash_credential(&a).len(), 64);
        assert_ne!(hash_credential(&a), hash_credential(&b));
    }
}
