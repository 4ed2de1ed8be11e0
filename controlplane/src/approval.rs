//! Approval codes: 6 characters from an alphabet without look-alikes (no 0/O, 1/I/L), shown
//! on the machine's screen and typed by an operator. Guessing is bounded by a lock-out: after
//! [`MAX_FAILURES`] wrong codes within [`FAILURE_WINDOW_MS`] an account cannot approve for the
//! rest of the window.

use rand::Rng;

/// The code alphabet: digits 2-9 and A-Z without I, L and O (31 symbols).
pub const ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
/// Length of a code.
pub const CODE_LEN: usize = 6;
/// Wrong codes allowed per account within the window.
pub const MAX_FAILURES: i64 = 5;
/// The failure window, also the lock-out duration.
pub const FAILURE_WINDOW_MS: i64 = 15 * 60 * 1000;

/// A new random code.
pub fn new_code() -> String {
    let mut rng = rand::thread_rng();
    (0..CODE_LEN)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Normalizes what an operator typed (case, spaces, dashes) and checks the alphabet.
pub fn normalize(input: &str) -> Result<String, String> {
    let code: String = input
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if code.len() != CODE_LEN {
        return Err(format!(
            "an approval code has {CODE_LEN} characters, {input:?} has {}",
            code.len()
        ));
    }
    if let Some(bad) = code.chars().find(|c| !ALPHABET.contains(&(*c as u8))) {
        return Err(format!(
            "approval codes never contain {bad:?} (they use 2-9 and A-Z without I, L, O)"
        ));
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_has_no_lookalikes() {
        for c in b"01OIL" {
            assert!(!ALPHABET.contains(c), "{}", *c as char);
        }
        assert_eq!(ALPHABET.len(), 31);
    }

    #[test]
    fn codes_are_valid() {
        for _ in 0..1000 {
            let c = new_code();
            assert_eq!(normalize(&c).unwrap(), c);
        }
    }

    #[test]
    fn normalization() {
        let cases = [
            ("abc-def", Ok("ABCDEF")),
            (" 23 45 67 ", Ok("234567")),
            ("ABCDE", Err("6 characters")),
            ("ABCDE0", Err("'0'")),
            ("ABCDEI", Err("'I'")),
        ];
        for (input, want) in cases {
            match (normalize(input), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, w),
                (Err(e), Err(w)) => assert!(e.contains(w), "{input}: {e}"),
                (got, w) => panic!("{input}: got {got:?}, want {w:?}"),
            }
        }
    }
}
