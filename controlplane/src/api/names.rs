//! Names of accounts, images and roles: what the API accepts. A leaf module: the resource
//! modules use it, it uses none of them.

use super::{ApiError, ApiResult};

/// Checks a name given for a `what` (account, image, role): 1-64 of `a-z A-Z 0-9 - _ .`.
pub fn validate_name(what: &str, name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{what} name {name:?} is invalid: use 1-64 characters among a-z A-Z 0-9 - _ ."
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for (name, ok) in [
            ("web-1.a_b", true),
            ("", false),
            ("a b", false),
            (&"x".repeat(65), false),
        ] {
            assert_eq!(validate_name("role", name).is_ok(), ok, "{name:?}");
        }
    }
}
