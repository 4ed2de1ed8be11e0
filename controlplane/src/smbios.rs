//! SMBIOS system UUIDs that identify no machine: placeholders cheap boards ship (all-zero,
//! all-F, the well-known `03000200-0400-0500-0006-000700080009` in both byte orders). The
//! server never matches machines on them (docs/protocol.md, "Machine identity").

/// UUIDs known to be shared by many boards, lowercase.
const PLACEHOLDERS: [&str; 2] = [
    "03000200-0400-0500-0006-000700080009",
    "00020003-0004-0005-0006-000700080009",
];

/// Whether `uuid` is a placeholder: one of [`PLACEHOLDERS`], a UUID of one repeated hex digit
/// (all-zero, all-F, ...), or not a UUID at all.
pub fn is_placeholder(uuid: &str) -> bool {
    let norm = uuid.trim().to_ascii_lowercase();
    let hex: Vec<char> = norm.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.iter().all(char::is_ascii_hexdigit) {
        return true;
    }
    PLACEHOLDERS.contains(&norm.as_str()) || hex.iter().all(|c| *c == hex[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders() {
        for (uuid, placeholder) in [
            ("00000000-0000-0000-0000-000000000000", true),
            ("FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", true),
            ("ffffffff-ffff-ffff-ffff-ffffffffffff", true),
            ("11111111-1111-1111-1111-111111111111", true),
            ("03000200-0400-0500-0006-000700080009", true),
            ("00020003-0004-0005-0006-000700080009", true),
            (" 03000200-0400-0500-0006-000700080009 ", true),
            ("Not Settable", true),
            ("", true),
            ("4c4c4544-0042-3510-8050-b4c04f4a4d31", false),
            ("4C4C4544-0042-3510-8050-B4C04F4A4D31", false),
        ] {
            assert_eq!(is_placeholder(uuid), placeholder, "{uuid:?}");
        }
    }
}
