//! JWE compact serialization, `alg: dir` with `enc: A128GCM` or `A256GCM` (RFC 7516), the
//! only form Kiln uses. Small on purpose and checked against RFC 7520 §5.6.
//!
//! Layout: `BASE64URL(header) . "" . BASE64URL(iv) . BASE64URL(ciphertext) . BASE64URL(tag)`;
//! the encrypted-key part is empty for `dir`, and the additional authenticated data is the
//! ASCII of the first part, so the header (with its `kid`) cannot be swapped.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};

/// Content encryption algorithms supported with `alg: dir`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enc {
    A128Gcm,
    A256Gcm,
}

impl Enc {
    fn name(self) -> &'static str {
        match self {
            Enc::A128Gcm => "A128GCM",
            Enc::A256Gcm => "A256GCM",
        }
    }

    fn key_len(self) -> usize {
        match self {
            Enc::A128Gcm => 16,
            Enc::A256Gcm => 32,
        }
    }
}

/// Why a JWE was refused. The messages are shown to API callers.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JweError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("unsupported token: {0}")]
    Unsupported(String),
    #[error(
        "token was encrypted with key {0:?}, which this server does not know (retired or never issued here)"
    )]
    UnknownKey(String),
    #[error("token failed authentication: it was altered or encrypted with another key")]
    Tampered,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    enc: String,
    #[serde(default, skip_serializing)]
    crit: Option<serde_json::Value>,
}

/// Encrypts `plaintext` with `key` and the given 96-bit `iv` (callers pass a random one).
pub fn encrypt(enc: Enc, kid: &str, key: &[u8], iv: [u8; 12], plaintext: &[u8]) -> String {
    assert_eq!(
        key.len(),
        enc.key_len(),
        "key length does not match {}",
        enc.name()
    );
    let header = Header {
        alg: "dir".into(),
        kid: Some(kid.into()),
        enc: enc.name().into(),
        crit: None,
    };
    let header_b64 = B64.encode(serde_json::to_vec(&header).expect("header serializes"));
    let payload = Payload {
        msg: plaintext,
        aad: header_b64.as_bytes(),
    };
    let nonce = Nonce::from_slice(&iv);
    let mut sealed = match enc {
        Enc::A128Gcm => Aes128Gcm::new_from_slice(key)
            .expect("key length checked")
            .encrypt(nonce, payload),
        Enc::A256Gcm => Aes256Gcm::new_from_slice(key)
            .expect("key length checked")
            .encrypt(nonce, payload),
    }
    .expect("AES-GCM encryption of an in-memory buffer cannot fail");
    let tag = sealed.split_off(sealed.len() - 16);
    format!(
        "{header_b64}..{}.{}.{}",
        B64.encode(iv),
        B64.encode(&sealed),
        B64.encode(tag)
    )
}

/// The `kid` of a compact JWE, read without decrypting.
pub fn key_id(compact: &str) -> Result<String, JweError> {
    let header_b64 = compact.split('.').next().unwrap_or("");
    parse_header(header_b64)?.1
}

fn parse_header(header_b64: &str) -> Result<(Enc, Result<String, JweError>), JweError> {
    let bytes = B64
        .decode(header_b64)
        .map_err(|_| JweError::Malformed("header is not base64url"))?;
    let header: Header = serde_json::from_slice(&bytes)
        .map_err(|_| JweError::Malformed("header is not a JWE header"))?;
    if header.crit.is_some() {
        return Err(JweError::Unsupported("critical header parameters".into()));
    }
    if header.alg != "dir" {
        return Err(JweError::Unsupported(format!(
            "alg {:?} (only \"dir\")",
            header.alg
        )));
    }
    let enc = match header.enc.as_str() {
        "A128GCM" => Enc::A128Gcm,
        "A256GCM" => Enc::A256Gcm,
        other => {
            return Err(JweError::Unsupported(format!(
                "enc {other:?} (only A128GCM, A256GCM)"
            )));
        }
    };
    Ok((
        enc,
        header.kid.ok_or(JweError::Malformed("header has no kid")),
    ))
}

/// Decrypts a compact JWE. `key_for` maps a key id to its key, `None` when unknown.
pub fn decrypt(
    compact: &str,
    key_for: impl FnOnce(&str) -> Option<Vec<u8>>,
) -> Result<Vec<u8>, JweError> {
    let parts: Vec<&str> = compact.trim().split('.').collect();
    let [header_b64, enc_key, iv, ct, tag] = parts[..] else {
        return Err(JweError::Malformed(
            "a compact JWE has five dot-separated parts",
        ));
    };
    let (enc, kid) = parse_header(header_b64)?;
    let kid = kid?;
    if !enc_key.is_empty() {
        return Err(JweError::Malformed(
            "encrypted key must be empty with alg dir",
        ));
    }
    let iv = B64
        .decode(iv)
        .map_err(|_| JweError::Malformed("iv is not base64url"))?;
    let ct = B64
        .decode(ct)
        .map_err(|_| JweError::Malformed("ciphertext is not base64url"))?;
    let tag = B64
        .decode(tag)
        .map_err(|_| JweError::Malformed("tag is not base64url"))?;
    if iv.len() != 12 || tag.len() != 16 {
        return Err(JweError::Malformed("iv must be 96 bits and tag 128 bits"));
    }
    let key = key_for(&kid).ok_or_else(|| JweError::UnknownKey(kid.clone()))?;
    if key.len() != enc.key_len() {
        return Err(JweError::Unsupported(format!(
            "key {kid:?} does not fit {}",
            enc.name()
        )));
    }
    let mut msg = ct;
    msg.extend_from_slice(&tag);
    let payload = Payload {
        msg: &msg,
        aad: header_b64.as_bytes(),
    };
    let nonce = Nonce::from_slice(&iv);
    match enc {
        Enc::A128Gcm => Aes128Gcm::new_from_slice(&key)
            .expect("length checked")
            .decrypt(nonce, payload),
        Enc::A256Gcm => Aes256Gcm::new_from_slice(&key)
            .expect("length checked")
            .decrypt(nonce, payload),
    }
    .map_err(|_| JweError::Tampered)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7520 §5.6 "Direct Encryption Using AES-GCM".
    const KID: &str = "77c7e2b8-6e13-45cf-8672-617b5b45243a";
    const KEY: &str = "XctOhJAkA-pD9Lh7ZgW_2A";
    const IV: &str = "refa467QzzKx6QAB";
    const PLAINTEXT: &str = "You can trust us to stick with you through thick and thin\u{2013}to the bitter end. And you can trust us to keep any secret of yours\u{2013}closer than you keep it yourself. But you cannot trust us to let you face trouble alone, and go off without a word. We are your friends, Frodo.";
    const COMPACT: &str = "eyJhbGciOiJkaXIiLCJraWQiOiI3N2M3ZTJiOC02ZTEzLTQ1Y2YtODY3Mi02MTdiNWI0NTI0M2EiLCJlbmMiOiJBMTI4R0NNIn0..refa467QzzKx6QAB.JW_i_f52hww_ELQPGaYyeAB6HYGcR559l9TYnSovc23XJoBcW29rHP8yZOZG7YhLpT1bjFuvZPjQS-m0IFtVcXkZXdH_lr_FrdYt9HRUYkshtrMmIUAyGmUnd9zMDB2n0cRDIHAzFVeJUDxkUwVAE7_YGRPdcqMyiBoCO-FBdE-Nceb4h3-FtBP-c_BIwCPTjb9o0SbdcdREEMJMyZBH8ySWMVi1gPD9yxi-aQpGbSv_F9N4IZAxscj5g-NJsUPbjk29-s7LJAGb15wEBtXphVCgyy53CoIKLHHeJHXex45Uz9aKZSRSInZI-wjsY0yu3cT4_aQ3i1o-tiE-F8Ios61EKgyIQ4CWao8PFMj8TTnp.vbb32Xvllea2OtmHAdccRQ";

    fn key() -> Vec<u8> {
        B64.decode(KEY).unwrap()
    }

    #[test]
    fn rfc7520_5_6_encrypt_matches() {
        let iv: [u8; 12] = B64.decode(IV).unwrap().try_into().unwrap();
        assert_eq!(
            encrypt(Enc::A128Gcm, KID, &key(), iv, PLAINTEXT.as_bytes()),
            COMPACT
        );
    }

    #[test]
    fn rfc7520_5_6_decrypt_matches() {
        let plain = decrypt(COMPACT, |kid| (kid == KID).then(key)).unwrap();
        assert_eq!(String::from_utf8(plain).unwrap(), PLAINTEXT);
        assert_eq!(key_id(COMPACT).unwrap(), KID);
    }

    #[test]
    fn every_altered_part_is_refused() {
        let parts: Vec<&str> = COMPACT.split('.').collect();
        for i in [0usize, 2, 3, 4] {
            let mut altered: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
            // Flip one character in the middle of the part to another base64url character.
            let mut chars: Vec<char> = altered[i].chars().collect();
            let mid = chars.len() / 2;
            chars[mid] = if chars[mid] == 'A' { 'B' } else { 'A' };
            altered[i] = chars.into_iter().collect();
            let err = decrypt(&altered.join("."), |_| Some(key())).unwrap_err();
            assert!(
                matches!(err, JweError::Tampered | JweError::Malformed(_)),
                "part {i}: {err:?}"
            );
        }
    }

    #[test]
    fn refusals_are_specific() {
        let cases: Vec<(String, &str)> = vec![
            ("a.b.c".into(), "five dot-separated"),
            (COMPACT.replacen("eyJ", "xyz", 1), "header"),
            (COMPACT.to_string(), "does not know"),
        ];
        for (token, want) in cases {
            let err = decrypt(&token, |_| None).unwrap_err().to_string();
            assert!(err.contains(want), "{token}: {err}");
        }
        // A non-dir algorithm.
        let header = B64.encode(br#"{"alg":"RSA-OAEP","kid":"k","enc":"A256GCM"}"#);
        let token = format!("{header}.x.{IV}.AA.{}", B64.encode([0u8; 16]));
        let err = decrypt(&token, |_| Some(vec![0; 32])).unwrap_err();
        assert!(matches!(err, JweError::Unsupported(_)), "{err:?}");
    }

    #[test]
    fn a256gcm_round_trip() {
        let key = [9u8; 32];
        let token = encrypt(Enc::A256Gcm, "k1", &key, [1; 12], b"hello");
        assert_eq!(
            decrypt(&token, |k| (k == "k1").then(|| key.to_vec())).unwrap(),
            b"hello"
        );
        assert_eq!(
            decrypt(&token, |_| Some(vec![8u8; 32])).unwrap_err(),
            JweError::Tampered
        );
    }
}
