//! The kernel command line as typed settings.
//!
//! [`split`] follows the kernel's own rules (`next_arg()` in lib/cmdline.c): words are
//! separated by whitespace, double quotes group a word or a value and are removed, a word
//! without `=` has no value. [`Settings::parse`] reads the `kiln.*` keys; an unknown
//! `kiln.*` key or a bad value is a [`Warning`], never an error: PID 1 must boot on.
//! The other parameters (`ip=`, `BOOTIF=`, `console=` ...) stay available in
//! [`Parsed::params`] for the parts that own them.

use serde::Serialize;
use std::fmt;

/// One `key[=value]` word of the command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Param {
    pub key: String,
    pub value: Option<String>,
}

/// Kernel parameters whose values are secrets: never printed.
pub const SECRET_KEYS: &[&str] = &["kiln.token", "kiln.credential"];

/// Whether a parameter's value is a secret (see [`SECRET_KEYS`]; also anything named
/// like a password, token, secret or credential).
pub fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SECRET_KEYS.contains(&k.as_str())
        || ["password", "passwd", "token", "secret", "credential"]
            .iter()
            .any(|s| k.contains(s))
}

/// Quotes a value the way the kernel's parser reads it back.
pub(crate) fn word(key: &str, value: Option<&str>) -> String {
    match value {
        None => key.to_string(),
        Some(v) if v.chars().any(char::is_whitespace) => format!("{key}=\"{v}\""),
        Some(v) => format!("{key}={v}"),
    }
}

/// The command line for messages: secret values become `<redacted>`.
pub fn redact(line: &str) -> String {
    split(line)
        .iter()
        .map(|p| match &p.value {
            Some(_) if is_secret(&p.key) => format!("{}=<redacted>", p.key),
            v => word(&p.key, v.as_deref()),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Splits a command line into parameters, removing quotes as the kernel does.
pub fn split(line: &str) -> Vec<Param> {
    let mut params = Vec::new();
    let mut chars = line.trim().chars().peekable();
    while chars.peek().is_some() {
        let mut word = String::new();
        let mut in_quote = false;
        let mut eq_at = None;
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() && !in_quote {
                break;
            }
            chars.next();
            match c {
                '"' => in_quote = !in_quote,
                '=' if eq_at.is_none() => {
                    eq_at = Some(word.len());
                    word.push(c);
                }
                _ => word.push(c),
            }
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if word.is_empty() {
            continue;
        }
        params.push(match eq_at {
            Some(i) => Param {
                key: word[..i].to_string(),
                value: Some(word[i + 1..].to_string()),
            },
            None => Param {
                key: word,
                value: None,
            },
        });
    }
    params
}

/// A secret from the command line (the bootstrap token): never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// How the console UI is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UiMode {
    /// TUI on a display when one is active, plain lines on serial consoles.
    #[default]
    Auto,
    /// Plain lines everywhere.
    Plain,
}

/// Typed `kiln.*` settings. Defaults apply where a key is absent or bad.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Settings {
    /// `kiln.url=`: the control plane's base URL (https:// or, for labs, http://).
    pub url: Option<String>,
    /// `kiln.token=`: a bootstrap token (skips approval).
    pub token: Option<Secret>,
    /// `kiln.ca=sha256:<hex>`: pin of the control plane's CA certificate.
    pub ca_pin: Option<String>,
    /// `kiln.machine=`: the machine id of an already-registered machine (set when an
    /// installed system kexecs back into the installer).
    pub machine_id: Option<String>,
    /// `kiln.credential=`: that machine's credential, so the installer reconnects
    /// without approval. Never printed.
    pub credential: Option<Secret>,
    /// `kiln.disk=`: root-device hints for provisioning.
    pub disk: Option<String>,
    /// `kiln.insecure-registry=host:port[,...]`: registries spoken to over plain HTTP (labs).
    pub insecure_registries: Vec<String>,
    /// `kiln.ifname=`: the NIC to use.
    pub ifname: Option<String>,
    /// `kiln.ntp=`: NTP servers, comma separated.
    pub ntp: Vec<String>,
    /// `kiln.ui=auto|plain`.
    pub ui: UiMode,
    /// `kiln.debug`: verbose events.
    pub debug: bool,
    /// `kiln.poweroff`: power off once start-up is done (used by tests).
    pub poweroff: bool,
}

/// A command-line problem that does not stop the boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kernel parameter {}: {}", self.key, self.message)
    }
}

/// The whole command line: typed settings, warnings, and every parameter.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Parsed {
    pub settings: Settings,
    pub warnings: Vec<Warning>,
    pub params: Vec<Param>,
}

impl Parsed {
    /// Values of every parameter named `key`, in order (e.g. all `console=`).
    pub fn values<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.params
            .iter()
            .filter(move |p| p.key == key)
            .filter_map(|p| p.value.as_deref())
    }
}

/// The `kiln.*` keys this version knows, with a one-line description (for warnings).
pub const KNOWN_KEYS: &[(&str, &str)] = &[
    ("kiln.url", "control plane URL"),
    ("kiln.token", "bootstrap token"),
    ("kiln.ca", "CA pin, sha256:<64 hex>"),
    ("kiln.machine", "machine id (re-provisioning)"),
    ("kiln.credential", "machine credential (re-provisioning)"),
    ("kiln.disk", "root-device hints"),
    ("kiln.insecure-registry", "plain-HTTP registries (labs)"),
    ("kiln.ifname", "network interface"),
    ("kiln.ntp", "NTP servers"),
    ("kiln.ui", "auto|plain"),
    ("kiln.debug", "verbose output"),
    ("kiln.poweroff", "power off when done (tests)"),
];

impl Settings {
    /// Parses a whole command line (the contents of /proc/cmdline).
    pub fn parse(line: &str) -> Parsed {
        let params = split(line);
        let mut settings = Settings::default();
        let mut warnings = Vec::new();
        let mut params = params;
        for p in params.iter_mut().filter(|p| p.key.starts_with("kiln.")) {
            if let Err(message) = settings.apply(&p.key, p.value.as_deref()) {
                warnings.push(Warning {
                    key: p.key.clone(),
                    message,
                });
            }
            if (p.key == "kiln.token" || p.key == "kiln.credential") && p.value.is_some() {
                p.value = Some("<redacted>".into());
            }
        }
        Parsed {
            settings,
            warnings,
            params,
        }
    }

    fn apply(&mut self, key: &str, value: Option<&str>) -> Result<(), String> {
        let need = |v: Option<&str>| match v {
            Some(v) if !v.is_empty() => Ok(v.to_string()),
            _ => Err(format!("needs a value ({key}=...); ignored")),
        };
        match key {
            "kiln.url" => {
                let v = need(value)?;
                if !(v.starts_with("https://") || v.starts_with("http://")) {
                    return Err(format!("{v:?} is not an http(s):// URL; ignored"));
                }
                self.url = Some(v.trim_end_matches('/').to_string());
            }
            "kiln.token" => self.token = Some(Secret(need(value)?)),
            "kiln.machine" => self.machine_id = Some(need(value)?),
            "kiln.credential" => self.credential = Some(Secret(need(value)?)),
            "kiln.ca" => {
                let v = need(value)?;
                let hex = v.strip_prefix("sha256:").unwrap_or(&v).to_ascii_lowercase();
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!(
                        "{v:?} is not a CA pin: expected sha256:<64 hex digits>; ignored"
                    ));
                }
                self.ca_pin = Some(format!("sha256:{hex}"));
            }
            "kiln.disk" => self.disk = Some(need(value)?),
            "kiln.ifname" => self.ifname = Some(need(value)?),
            "kiln.insecure-registry" => self.insecure_registries.extend(
                need(value)?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            ),
            "kiln.ntp" => {
                self.ntp = need(value)?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            }
            "kiln.ui" => {
                self.ui = match value {
                    Some("auto") => UiMode::Auto,
                    Some("plain") => UiMode::Plain,
                    other => {
                        return Err(format!(
                            "{:?} is not one of auto, plain; using auto",
                            other.unwrap_or("")
                        ));
                    }
                }
            }
            "kiln.debug" => self.debug = flag(key, value)?,
            "kiln.poweroff" => self.poweroff = flag(key, value)?,
            _ => {
                let known: Vec<&str> = KNOWN_KEYS.iter().map(|(k, _)| *k).collect();
                return Err(format!(
                    "unknown key, ignored (known: {})",
                    known.join(", ")
                ));
            }
        }
        Ok(())
    }
}

/// A boolean flag: bare `key`, or `key=1|0|yes|no|true|false|on|off`.
fn flag(key: &str, value: Option<&str>) -> Result<bool, String> {
    match value {
        None | Some("1" | "yes" | "true" | "on" | "y") => Ok(true),
        Some("0" | "no" | "false" | "off" | "n") => Ok(false),
        Some(v) => Err(format!(
            "{v:?} is not a boolean (use {key}=1 or {key}=0); ignored"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(key: &str, value: Option<&str>) -> Param {
        Param {
            key: key.into(),
            value: value.map(Into::into),
        }
    }

    #[test]
    fn split_follows_kernel_rules() {
        let cases: &[(&str, Vec<Param>)] = &[
            ("", vec![]),
            ("  quiet  ", vec![p("quiet", None)]),
            (
                "BOOT_IMAGE=/vmlinuz root=UUID=1234 ro\n",
                vec![
                    p("BOOT_IMAGE", Some("/vmlinuz")),
                    p("root", Some("UUID=1234")),
                    p("ro", None),
                ],
            ),
            (
                r#"kiln.url="https://cp.example:8443/x y" console=ttyS0,115200n8"#,
                vec![
                    p("kiln.url", Some("https://cp.example:8443/x y")),
                    p("console", Some("ttyS0,115200n8")),
                ],
            ),
            (
                r#""dyndbg=file a.c +p""#,
                vec![p("dyndbg", Some("file a.c +p"))],
            ),
            ("empty= x", vec![p("empty", Some("")), p("x", None)]),
            (
                "ip=10.0.0.2::10.0.0.1:255.255.255.0:h:eth0:none",
                vec![p(
                    "ip",
                    Some("10.0.0.2::10.0.0.1:255.255.255.0:h:eth0:none"),
                )],
            ),
        ];
        for (line, want) in cases {
            assert_eq!(&split(line), want, "line {line:?}");
        }
    }

    #[test]
    fn settings_table() {
        let pin = "AB".repeat(32);
        let parsed = Settings::parse(&format!(
            "console=ttyS0 kiln.url=https://cp.lab:8443/ kiln.token=eyJhbGc kiln.ca=sha256:{pin} \
             kiln.disk=serial=S1,size>=10G kiln.ntp=a.ntp,b.ntp kiln.ui=plain kiln.poweroff \
             kiln.insecure-registry=10.0.2.100:5000,r.lab:80"
        ));
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
        let s = parsed.settings;
        assert_eq!(s.url.as_deref(), Some("https://cp.lab:8443"));
        assert_eq!(s.token.as_ref().map(Secret::expose), Some("eyJhbGc"));
        assert_eq!(s.ca_pin, Some(format!("sha256:{}", "ab".repeat(32))));
        assert_eq!(s.disk.as_deref(), Some("serial=S1,size>=10G"));
        assert_eq!(s.ntp, vec!["a.ntp", "b.ntp"]);
        assert_eq!(s.insecure_registries, vec!["10.0.2.100:5000", "r.lab:80"]);
        assert_eq!(s.ui, UiMode::Plain);
        assert!(s.poweroff);
    }

    #[test]
    fn bad_values_and_unknown_keys_are_warnings() {
        let cases = [
            ("kiln.colour=blue", "kiln.colour", "unknown key"),
            ("kiln.url=ftp://x", "kiln.url", "not an http(s):// URL"),
            ("kiln.url", "kiln.url", "needs a value"),
            ("kiln.ca=sha256:abc", "kiln.ca", "not a CA pin"),
            ("kiln.poweroff=maybe", "kiln.poweroff", "not a boolean"),
            ("kiln.ui=fancy", "kiln.ui", "not one of auto, plain"),
        ];
        for (line, key, msg) in cases {
            let parsed = Settings::parse(line);
            assert_eq!(parsed.warnings.len(), 1, "{line}");
            assert_eq!(parsed.warnings[0].key, key, "{line}");
            assert!(
                parsed.warnings[0].message.contains(msg),
                "{line}: {}",
                parsed.warnings[0].message
            );
            assert_eq!(parsed.settings, Settings::default(), "{line}");
        }
    }

    #[test]
    fn machine_credential() {
        let parsed = Settings::parse("kiln.machine=m-42 kiln.credential=CRED456");
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
        assert_eq!(parsed.settings.machine_id.as_deref(), Some("m-42"));
        assert_eq!(
            parsed.settings.credential.as_ref().map(Secret::expose),
            Some("CRED456")
        );
        assert!(!format!("{parsed:?}").contains("CRED456"));
        assert!(!serde_json::to_string(&parsed).unwrap().contains("CRED456"));
    }

    #[test]
    fn token_is_never_printed() {
        let parsed = Settings::parse("kiln.token=SECRET123");
        assert!(!format!("{:?}", parsed.settings).contains("SECRET123"));
        assert!(
            !serde_json::to_string(&parsed.settings)
                .unwrap()
                .contains("SECRET123")
        );
        assert!(!format!("{parsed:?}").contains("SECRET123"));
        assert!(
            !serde_json::to_string(&parsed)
                .unwrap()
                .contains("SECRET123")
        );
    }

    #[test]
    fn values_lists_repeated_params() {
        let parsed = Settings::parse("console=tty0 console=ttyS0,115200 quiet");
        assert_eq!(
            parsed.values("console").collect::<Vec<_>>(),
            ["tty0", "ttyS0,115200"]
        );
    }
}
