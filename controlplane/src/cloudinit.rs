//! Deterministic merge of the cloud-init user-data (or vendor-data) of a machine's roles.
//!
//! The rule (also in docs/controlplane.md):
//! 1. Roles are taken in ascending byte order of their names; empty data is skipped.
//! 2. One non-empty document is passed through byte for byte.
//! 3. Every `#cloud-config` document is deep-merged into one: mappings merge key by key
//!    (recursively), sequences are concatenated in role order, and for any other conflict
//!    the later role (by name) wins. The result is written as `#cloud-config` YAML.
//! 4. Other documents (scripts `#!`, `#include`, `#cloud-boothook`, jinja templates, or
//!    MIME multipart documents) cannot be merged: when there is any, the result is a
//!    `multipart/mixed` MIME document with the merged cloud-config first (when present),
//!    then every other document in role order (multipart ones nested as they are). The
//!    boundary is derived from the content, so equal input gives equal output.

use anyhow::{Context, Result, bail};
use serde_yaml::{Mapping, Value};
use sha2::{Digest, Sha256};

/// What kind of cloud-init document a text is, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    CloudConfig,
    Multipart,
    Other(&'static str),
}

/// Sniffs the document kind and MIME type from the first line.
pub fn kind(text: &str) -> Kind {
    let first = text.lines().next().unwrap_or("").trim_end();
    let lower = first.to_ascii_lowercase();
    if first.starts_with("#cloud-config") {
        Kind::CloudConfig
    } else if lower.starts_with("content-type: multipart/") || lower.starts_with("mime-version:") {
        Kind::Multipart
    } else if first.starts_with("#!") {
        Kind::Other("text/x-shellscript")
    } else if first.starts_with("#include") {
        Kind::Other("text/x-include-url")
    } else if first.starts_with("#cloud-boothook") {
        Kind::Other("text/cloud-boothook")
    } else if first.starts_with("## template: jinja") {
        Kind::Other("text/jinja2")
    } else {
        Kind::Other("text/plain")
    }
}

/// Checks that a role's data is something cloud-init accepts; `#cloud-config` must be a
/// YAML mapping.
pub fn validate(role: &str, field: &str, text: &str) -> Result<()> {
    if text.trim().is_empty() {
        return Ok(());
    }
    match kind(text) {
        Kind::CloudConfig => {
            parse_cloud_config(text).with_context(|| format!("{field} of role {role:?}"))?;
        }
        Kind::Multipart => {}
        Kind::Other("text/plain") => bail!(
            "{field} of role {role:?} is neither #cloud-config, a script (#!), #include, \
             #cloud-boothook, a jinja template nor a MIME multipart document"
        ),
        Kind::Other(_) => {}
    }
    Ok(())
}

fn parse_cloud_config(text: &str) -> Result<Mapping> {
    let value: Value = serde_yaml::from_str(text).context("#cloud-config is not valid YAML")?;
    match value {
        Value::Mapping(m) => Ok(m),
        Value::Null => Ok(Mapping::new()),
        _ => bail!("#cloud-config must be a YAML mapping at the top level"),
    }
}

fn merge_value(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Mapping(a), Value::Mapping(b)) => merge_map(a, b),
        (Value::Sequence(a), Value::Sequence(b)) => a.extend(b),
        (slot, other) => *slot = other,
    }
}

fn merge_map(into: &mut Mapping, from: Mapping) {
    for (k, v) in from {
        match into.get_mut(&k) {
            Some(existing) => merge_value(existing, v),
            None => {
                into.insert(k, v);
            }
        }
    }
}

/// Merges the documents of `roles` (name, data). Returns `None` when all are empty.
pub fn merge(roles: &[(String, Option<String>)]) -> Result<Option<String>> {
    let mut docs: Vec<(&str, &str)> = roles
        .iter()
        .filter_map(|(name, data)| {
            data.as_deref()
                .filter(|d| !d.trim().is_empty())
                .map(|d| (name.as_str(), d))
        })
        .collect();
    docs.sort_by(|a, b| a.0.cmp(b.0));
    match docs.len() {
        0 => return Ok(None),
        1 => return Ok(Some(docs[0].1.to_string())),
        _ => {}
    }
    let mut merged: Option<Mapping> = None;
    let mut others = Vec::new();
    for (name, text) in &docs {
        match kind(text) {
            Kind::CloudConfig => {
                let map = parse_cloud_config(text).with_context(|| format!("role {name:?}"))?;
                match &mut merged {
                    Some(m) => merge_map(m, map),
                    None => merged = Some(map),
                }
            }
            k => others.push((*name, *text, k)),
        }
    }
    let cloud_config = match merged {
        Some(m) => Some(format!(
            "#cloud-config\n{}",
            serde_yaml::to_string(&Value::Mapping(m))?
        )),
        None => None,
    };
    if others.is_empty() {
        return Ok(cloud_config);
    }
    let mut hasher = Sha256::new();
    for (name, text) in &docs {
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(text.as_bytes());
        hasher.update([0]);
    }
    let boundary = format!("kiln-{}", &hex::encode(hasher.finalize())[..32]);
    let mut out =
        format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\nMIME-Version: 1.0\n\n");
    if let Some(cc) = cloud_config {
        out.push_str(&format!(
            "--{boundary}\nContent-Type: text/cloud-config; charset=\"utf-8\"\n\
             Content-Disposition: attachment; filename=\"merged-cloud-config\"\n\n{cc}\n"
        ));
    }
    for (name, text, k) in others {
        match k {
            Kind::Multipart => out.push_str(&format!("--{boundary}\n{}\n", text.trim_end())),
            Kind::Other(mime) => out.push_str(&format!(
                "--{boundary}\nContent-Type: {mime}; charset=\"utf-8\"\n\
                 Content-Disposition: attachment; filename=\"{name}\"\n\n{}\n",
                text.trim_end()
            )),
            Kind::CloudConfig => unreachable!("cloud-config documents were merged"),
        }
    }
    out.push_str(&format!("--{boundary}--\n"));
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(items: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
        items
            .iter()
            .map(|(n, d)| (n.to_string(), d.map(str::to_string)))
            .collect()
    }

    #[test]
    fn kinds_sniffed_from_first_line() {
        let cases = [
            ("#cloud-config\na: 1", Kind::CloudConfig),
            ("#!/bin/sh\necho", Kind::Other("text/x-shellscript")),
            (
                "Content-Type: multipart/mixed; boundary=x\n",
                Kind::Multipart,
            ),
            ("#include\nhttp://x", Kind::Other("text/x-include-url")),
            ("#cloud-boothook\n", Kind::Other("text/cloud-boothook")),
            ("hello", Kind::Other("text/plain")),
        ];
        for (text, want) in cases {
            assert_eq!(kind(text), want, "{text}");
        }
    }

    #[test]
    fn empty_and_single() {
        assert_eq!(
            merge(&roles(&[("a", None), ("b", Some("  "))])).unwrap(),
            None
        );
        let single = "#cloud-config\n# comment kept\npackages: [vim]\n";
        assert_eq!(
            merge(&roles(&[("a", Some(single))])).unwrap().unwrap(),
            single
        );
    }

    #[test]
    fn cloud_configs_deep_merge_in_name_order() {
        let web = "#cloud-config\npackages: [nginx]\nwrite_files:\n  - path: /a\nusers:\n  default: {shell: /bin/sh}\ntimezone: UTC\n";
        let base = "#cloud-config\npackages: [vim]\nusers:\n  default: {groups: wheel}\ntimezone: Europe/Paris\n";
        // Given out of order: the merge sorts by role name (base < web).
        let out = merge(&roles(&[("web", Some(web)), ("base", Some(base))]))
            .unwrap()
            .unwrap();
        assert!(out.starts_with("#cloud-config\n"));
        let v: Value = serde_yaml::from_str(&out).unwrap();
        assert_eq!(
            v["packages"],
            serde_yaml::from_str::<Value>("[vim, nginx]").unwrap()
        );
        assert_eq!(v["timezone"], Value::from("UTC"), "later role wins scalars");
        assert_eq!(v["users"]["default"]["shell"], Value::from("/bin/sh"));
        assert_eq!(v["users"]["default"]["groups"], Value::from("wheel"));
        // Deterministic.
        let again = merge(&roles(&[("base", Some(base)), ("web", Some(web))]))
            .unwrap()
            .unwrap();
        assert_eq!(out, again);
    }

    #[test]
    fn scripts_make_multipart() {
        let cc = "#cloud-config\npackages: [vim]\n";
        let script = "#!/bin/sh\necho hi\n";
        let out = merge(&roles(&[
            ("z-script", Some(script)),
            ("a-cc", Some(cc)),
            ("m", Some(cc)),
        ]))
        .unwrap()
        .unwrap();
        assert!(out.starts_with("Content-Type: multipart/mixed; boundary=\"kiln-"));
        let cc_at = out.find("text/cloud-config").unwrap();
        let sh_at = out.find("text/x-shellscript").unwrap();
        assert!(cc_at < sh_at);
        assert!(out.contains("filename=\"z-script\""));
        assert!(
            out.contains("- vim\n- vim")
                || out.contains("- vim\n  - vim")
                || out.matches("vim").count() == 2
        );
        assert!(out.trim_end().ends_with("--"));
    }

    #[test]
    fn bad_cloud_config_names_role() {
        let err = merge(&roles(&[
            ("a", Some("#cloud-config\n[1, 2]\n")),
            ("b", Some("#!/bin/sh")),
        ]))
        .unwrap_err();
        assert!(format!("{err:#}").contains("role \"a\""), "{err:#}");
        let err = validate("r1", "user_data", "just text")
            .unwrap_err()
            .to_string();
        assert!(err.contains("r1"), "{err}");
    }
}
