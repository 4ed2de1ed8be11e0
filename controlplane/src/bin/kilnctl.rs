//! `kilnctl`: command line client of the Kiln control plane. Tables by default, `-o json`
//! for scripts.

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use kiln_controlplane::client::{ApiFailure, Client, Trust};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(version, about = "Manage a Kiln control plane")]
struct Cli {
    /// Server URL.
    #[arg(
        long,
        env = "KILN_SERVER",
        global = true,
        default_value = "https://localhost:8443"
    )]
    server: String,
    /// API key (kiln_...).
    #[arg(long, env = "KILN_API_KEY", global = true, hide_env_values = true)]
    api_key: Option<String>,
    /// CA certificate file of the server.
    #[arg(long, env = "KILN_CA_CERT", global = true)]
    ca_cert: Option<PathBuf>,
    /// SHA-256 pin of the server CA (printed by kiln-server at start).
    #[arg(long, env = "KILN_CA_SHA256", global = true)]
    ca_sha256: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, global = true, default_value = "table")]
    output: Output,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Server version, URL and CA pin.
    Info,
    /// Accounts (admin).
    #[command(subcommand)]
    Account(AccountCmd),
    /// API keys of your account.
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCmd),
    /// Bootstrap tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Token encryption keys (admin).
    #[command(subcommand, name = "token-key")]
    TokenKey(TokenKeyCmd),
    /// Account settings (default image).
    #[command(subcommand)]
    Settings(SettingsCmd),
    /// Image catalog.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Registry credentials (secrets are read from stdin, never from arguments).
    #[command(subcommand, name = "registry-credential")]
    RegistryCredential(CredCmd),
    /// Machine roles.
    #[command(subcommand)]
    Role(RoleCmd),
    /// Machines.
    #[command(subcommand)]
    Machine(MachineCmd),
    /// Provisioning runs.
    #[command(subcommand)]
    Provision(ProvisionCmd),
    /// Installer artifacts on the server.
    Artifacts,
    /// Installer media with this server's URL and CA pin baked in.
    #[command(subcommand)]
    Installer(InstallerCmd),
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand, Debug)]
enum AccountCmd {
    List,
    /// Create an account; prints its first API key once.
    Create {
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum ApiKeyCmd {
    List,
    Create {
        name: String,
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        account: Option<String>,
    },
    Revoke {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCmd {
    /// Create a bootstrap token.
    Create {
        /// 10m, 1d, 7d, 30d, 90d or 365d.
        #[arg(long, default_value = "10m")]
        lifetime: String,
        /// Role to assign to registering machines (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
    },
}

#[derive(clap::Args, Debug)]
struct BakeArgs {
    /// Also bake a new bootstrap token of this lifetime (10m, 1d, 7d, 30d, 90d or 365d):
    /// machines booting it skip approval. Without it they show an approval code.
    #[arg(long)]
    token_ttl: Option<String>,
    /// Role the baked token assigns (repeatable; needs --token-ttl).
    #[arg(long = "role", requires = "token_ttl")]
    roles: Vec<String>,
}

impl BakeArgs {
    fn query(&self) -> String {
        let mut q = Vec::new();
        if let Some(t) = &self.token_ttl {
            q.push(format!("token_ttl={t}"));
        }
        if !self.roles.is_empty() {
            q.push(format!("roles={}", self.roles.join(",")));
        }
        if q.is_empty() {
            String::new()
        } else {
            format!("?{}", q.join("&"))
        }
    }
}

#[derive(Subcommand, Debug)]
enum InstallerCmd {
    /// Download the installer ISO (BIOS and UEFI, CD or USB stick).
    Iso {
        #[command(flatten)]
        bake: BakeArgs,
        /// Where to write the ISO.
        #[arg(long, default_value = "kiln.iso")]
        out: PathBuf,
    },
    /// Print the iPXE script that boots the installer kernel from this server.
    Ipxe {
        #[command(flatten)]
        bake: BakeArgs,
    },
}

#[derive(Subcommand, Debug)]
enum TokenKeyCmd {
    List,
    Rotate,
    Retire { kid: String },
}

#[derive(Subcommand, Debug)]
enum SettingsCmd {
    Get,
    Set {
        /// Image name or id.
        #[arg(long, conflicts_with = "clear_default_image")]
        default_image: Option<String>,
        #[arg(long)]
        clear_default_image: bool,
    },
}

#[derive(clap::Args, Debug)]
struct ImageArgs {
    name: String,
    #[arg(long)]
    description: Option<String>,
    #[arg(long)]
    oci_url: Option<String>,
    /// Registry credential id.
    #[arg(long)]
    registry_credential: Option<String>,
    #[arg(long)]
    raw_disk_url: Option<String>,
    #[arg(long)]
    raw_checksum: Option<String>,
    /// md5, sha256 or sha512 (detected from the length when omitted).
    #[arg(long)]
    raw_checksum_type: Option<String>,
}

impl ImageArgs {
    fn body(&self) -> Value {
        json!({"name": self.name, "description": self.description, "oci_url": self.oci_url,
            "registry_credential_id": self.registry_credential, "raw_disk_url": self.raw_disk_url,
            "raw_checksum": self.raw_checksum, "raw_checksum_type": self.raw_checksum_type})
    }
}

#[derive(Subcommand, Debug)]
enum ImageCmd {
    List {
        /// all, official or custom.
        #[arg(long, default_value = "all")]
        filter: String,
    },
    Get {
        image: String,
    },
    Create(ImageArgs),
    /// Replace all fields of a custom image.
    Update {
        image: String,
        #[command(flatten)]
        args: ImageArgs,
    },
    Delete {
        image: String,
    },
}

#[derive(Subcommand, Debug)]
enum CredCmd {
    List,
    /// Store a credential; the password (or token) is read from stdin.
    Create {
        registry: String,
        /// Username; the password is read from stdin.
        #[arg(long, conflicts_with = "token")]
        username: Option<String>,
        /// Read a token (not a password) from stdin.
        #[arg(long)]
        token: bool,
    },
    Delete {
        id: String,
    },
}

#[derive(clap::Args, Debug)]
struct RoleArgs {
    name: String,
    /// Image name or id.
    #[arg(long)]
    image: Option<String>,
    /// cloud-init user-data file (#cloud-config, script or multipart).
    #[arg(long)]
    user_data: Option<PathBuf>,
    #[arg(long)]
    vendor_data: Option<PathBuf>,
}

impl RoleArgs {
    fn body(&self) -> Result<Value> {
        let read = |p: &Option<PathBuf>| -> Result<Option<String>> {
            p.as_ref()
                .map(|p| {
                    std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
                })
                .transpose()
        };
        Ok(
            json!({"name": self.name, "image": self.image, "user_data": read(&self.user_data)?,
            "vendor_data": read(&self.vendor_data)?}),
        )
    }
}

#[derive(Subcommand, Debug)]
enum RoleCmd {
    List,
    Get {
        role: String,
    },
    Create(RoleArgs),
    /// Replace a role (all fields).
    Update {
        role: String,
        #[command(flatten)]
        args: RoleArgs,
    },
    Delete {
        role: String,
    },
}

#[derive(Subcommand, Debug)]
enum MachineCmd {
    List,
    Get {
        id: String,
    },
    /// Approve a machine by the code on its screen.
    Approve {
        code: String,
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// Set the complete role list.
    SetRoles {
        id: String,
        roles: Vec<String>,
    },
    /// Enable or disable kexec into the installer for re-provisioning.
    Kexec {
        id: String,
        #[arg(action = clap::ArgAction::Set)]
        enabled: bool,
    },
    RevokeCredential {
        id: String,
    },
    /// kexec from the installer back into the installed system.
    BootInstalledSystem {
        id: String,
    },
    Reboot {
        id: String,
    },
    Delete {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum ProvisionCmd {
    /// Provision a machine (asks before overwriting an installed system).
    Start {
        machine: String,
        /// Confirm overwriting the disk without asking.
        #[arg(long)]
        yes: bool,
        /// Follow the run.
        #[arg(long)]
        watch: bool,
    },
    /// Runs of a machine.
    List { machine: String },
    /// A run with its event history.
    Get { run: String },
    /// Follow a run live with a progress bar until it ends.
    Watch { run: String },
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Prints `v` as JSON or as a table of `cols` (header, field).
fn print(out: Output, v: &Value, cols: &[(&str, &str)]) {
    if out == Output::Json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        return;
    }
    let rows: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        Value::Null => vec![],
        other => vec![other],
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            cols.iter()
                .map(|(_, f)| {
                    cell(
                        r.pointer(&format!("/{}", f.replace('.', "/")))
                            .unwrap_or(&Value::Null),
                    )
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
                .max(h.len())
        })
        .collect();
    let line = |items: Vec<String>| {
        let parts: Vec<String> = items
            .iter()
            .zip(&widths)
            .map(|(s, w)| format!("{s:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(cols.iter().map(|(h, _)| h.to_string()).collect());
    for r in cells {
        line(r);
    }
}

fn read_secret(what: &str) -> Result<String> {
    if std::io::stdin().is_terminal() {
        eprint!("{what}: ");
        std::io::stderr().flush()?;
    }
    let mut s = String::new();
    std::io::stdin().lock().read_line(&mut s)?;
    let s = s.trim_end_matches(['\n', '\r']).to_string();
    if s.is_empty() {
        bail!("empty {what} on stdin");
    }
    Ok(s)
}

const IMAGE_COLS: &[(&str, &str)] = &[
    ("NAME", "name"),
    ("OFFICIAL", "official"),
    ("OCI URL", "oci_url"),
    ("RAW DISK", "raw_disk.url"),
    ("ID", "id"),
];
const ROLE_COLS: &[(&str, &str)] = &[("NAME", "name"), ("IMAGE", "image_name"), ("ID", "id")];
const MACHINE_COLS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("HOSTNAME", "hostname"),
    ("STATE", "state"),
    ("ROLES", "roles"),
    ("KEXEC", "kexec_installer"),
    ("LAST SEEN", "last_seen_at"),
];
const RUN_COLS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("STATUS", "status"),
    ("PERCENT", "percent"),
    ("STEP", "current_step"),
    ("IMAGE", "image_name"),
    ("STARTED", "started_at"),
    ("FINISHED", "finished_at"),
    ("ERROR", "error"),
];

async fn watch(c: &Client, run: &str) -> Result<()> {
    let bar = indicatif::ProgressBar::new(100);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{bar:40}] {pos:>3}% {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    let mut shown = 0usize;
    loop {
        let r = c.get(&format!("/api/runs/{run}")).await?;
        if let Some(events) = r["events"].as_array() {
            for e in &events[shown.min(events.len())..] {
                if let Ok(ev) =
                    serde_json::from_value::<kiln_protocol::RunEvent>(e["event"].clone())
                    && !matches!(ev, kiln_protocol::RunEvent::Progress { .. })
                {
                    let line = format!("{} {ev}", cell(&e["at"]));
                    // A hidden bar (output not a terminal) prints nothing: log plain lines.
                    if bar.is_hidden() {
                        println!("{line}");
                    } else {
                        bar.println(line);
                    }
                }
            }
            shown = events.len();
        }
        bar.set_position(r["percent"].as_u64().unwrap_or(0));
        let step = r["current_step"]
            .as_str()
            .and_then(kiln_protocol::Step::parse)
            .map(|s| s.to_string())
            .unwrap_or_else(|| "waiting for the agent".into());
        bar.set_message(format!("{} ({})", step, cell(&r["status"])));
        match r["status"].as_str() {
            Some("completed") => {
                bar.finish_with_message("completed");
                return Ok(());
            }
            Some("failed") => {
                bar.abandon_with_message("failed");
                bail!("run {run} failed: {}", cell(&r["error"]));
            }
            _ => {}
        }
        bar.tick();
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

async fn run(cli: Cli) -> Result<()> {
    if let Cmd::Completions { shell } = cli.cmd {
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "kilnctl",
            &mut std::io::stdout(),
        );
        return Ok(());
    }
    let trust = match (&cli.ca_cert, &cli.ca_sha256) {
        (Some(p), _) => Trust::CaPem(
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        ),
        (None, Some(pin)) => Trust::Pin(pin.clone()),
        (None, None) => bail!(
            "give the server CA with --ca-cert FILE or --ca-sha256 PIN (printed by kiln-server)"
        ),
    };
    let c = Client::new(&cli.server, trust, cli.api_key.clone()).await?;
    let o = cli.output;
    let nobody = None::<&Value>;
    match cli.cmd {
        Cmd::Completions { .. } => unreachable!("handled above"),
        Cmd::Info => print(
            o,
            &c.get("/api/info").await?,
            &[
                ("URL", "public_url"),
                ("VERSION", "version"),
                ("CA SHA256", "ca_sha256"),
            ],
        ),
        Cmd::Artifacts => print(
            o,
            &c.get("/artifacts").await?,
            &[
                ("NAME", "name"),
                ("AVAILABLE", "available"),
                ("SIZE", "size_bytes"),
                ("HINT", "build_hint"),
            ],
        ),
        Cmd::Installer(InstallerCmd::Iso { bake, out }) => {
            let path = format!("/api/installer/iso{}", bake.query());
            let n = c.download(&path, &out).await?;
            let v = json!({"file": out.display().to_string(), "size_bytes": n,
                "token_ttl": bake.token_ttl, "roles": bake.roles});
            print(
                o,
                &v,
                &[
                    ("FILE", "file"),
                    ("SIZE", "size_bytes"),
                    ("TOKEN TTL", "token_ttl"),
                ],
            );
        }
        Cmd::Installer(InstallerCmd::Ipxe { bake }) => {
            print!("{}", c.text(&format!("/boot.ipxe{}", bake.query())).await?);
        }
        Cmd::Account(AccountCmd::List) => print(
            o,
            &c.get("/api/accounts").await?,
            &[("NAME", "name"), ("ID", "id"), ("CREATED", "created_at")],
        ),
        Cmd::Account(AccountCmd::Create { name }) => {
            let v = c
                .call(Method::POST, "/api/accounts", Some(&json!({"name": name})))
                .await?;
            print(
                o,
                &v,
                &[
                    ("ACCOUNT", "account.name"),
                    ("ID", "account.id"),
                    ("API KEY (shown once)", "api_key"),
                ],
            );
        }
        Cmd::ApiKey(ApiKeyCmd::List) => print(
            o,
            &c.get("/api/api-keys").await?,
            &[
                ("NAME", "name"),
                ("ADMIN", "is_admin"),
                ("REVOKED", "revoked"),
                ("ID", "id"),
            ],
        ),
        Cmd::ApiKey(ApiKeyCmd::Create {
            name,
            admin,
            account,
        }) => {
            let v = c
                .call(
                    Method::POST,
                    "/api/api-keys",
                    Some(&json!({"name": name, "admin": admin, "account_id": account})),
                )
                .await?;
            print(
                o,
                &v,
                &[
                    ("NAME", "info.name"),
                    ("ID", "info.id"),
                    ("KEY (shown once)", "key"),
                ],
            );
        }
        Cmd::ApiKey(ApiKeyCmd::Revoke { id }) => {
            c.call(Method::DELETE, &format!("/api/api-keys/{id}"), nobody)
                .await?;
        }
        Cmd::Token(TokenCmd::Create { lifetime, roles }) => {
            let v = c
                .call(
                    Method::POST,
                    "/api/bootstrap-tokens",
                    Some(&json!({"lifetime": lifetime, "roles": roles})),
                )
                .await?;
            print(
                o,
                &v,
                &[
                    ("EXPIRES", "expires_at"),
                    ("ROLES", "roles"),
                    ("TOKEN", "token"),
                ],
            );
        }
        Cmd::TokenKey(cmd) => {
            let v = match cmd {
                TokenKeyCmd::List => c.get("/api/admin/token-keys").await?,
                TokenKeyCmd::Rotate => {
                    c.call(Method::POST, "/api/admin/token-keys/rotate", nobody)
                        .await?
                }
                TokenKeyCmd::Retire { kid } => {
                    c.call(
                        Method::DELETE,
                        &format!("/api/admin/token-keys/{kid}"),
                        nobody,
                    )
                    .await?;
                    c.get("/api/admin/token-keys").await?
                }
            };
            print(
                o,
                &v,
                &[
                    ("KID", "kid"),
                    ("CURRENT", "current"),
                    ("CREATED", "created_at"),
                    ("RETIRED", "retired_at"),
                ],
            );
        }
        Cmd::Settings(cmd) => {
            let v = match cmd {
                SettingsCmd::Get => c.get("/api/account/settings").await?,
                SettingsCmd::Set {
                    default_image,
                    clear_default_image,
                } => {
                    if default_image.is_none() && !clear_default_image {
                        bail!("give --default-image NAME or --clear-default-image");
                    }
                    c.call(
                        Method::PUT,
                        "/api/account/settings",
                        Some(&json!({"default_image": default_image})),
                    )
                    .await?
                }
            };
            print(
                o,
                &v,
                &[
                    ("ACCOUNT", "account_name"),
                    ("DEFAULT IMAGE", "default_image_name"),
                ],
            );
        }
        Cmd::Image(cmd) => match cmd {
            ImageCmd::List { filter } => print(
                o,
                &c.get(&format!("/api/images?filter={filter}")).await?,
                IMAGE_COLS,
            ),
            ImageCmd::Get { image } => print(
                o,
                &c.get(&format!("/api/images/{image}")).await?,
                IMAGE_COLS,
            ),
            ImageCmd::Create(a) => print(
                o,
                &c.call(Method::POST, "/api/images", Some(&a.body())).await?,
                IMAGE_COLS,
            ),
            ImageCmd::Update { image, args } => print(
                o,
                &c.call(
                    Method::PUT,
                    &format!("/api/images/{image}"),
                    Some(&args.body()),
                )
                .await?,
                IMAGE_COLS,
            ),
            ImageCmd::Delete { image } => {
                c.call(Method::DELETE, &format!("/api/images/{image}"), nobody)
                    .await?;
            }
        },
        Cmd::RegistryCredential(cmd) => {
            let cols = &[
                ("REGISTRY", "registry"),
                ("KIND", "kind"),
                ("USERNAME", "username"),
                ("ID", "id"),
            ];
            match cmd {
                CredCmd::List => print(o, &c.get("/api/registry-credentials").await?, cols),
                CredCmd::Create {
                    registry,
                    username,
                    token,
                } => {
                    let body = match (username, token) {
                        (Some(u), false) => {
                            json!({"registry": registry, "username": u, "password": read_secret("password")?})
                        }
                        (None, true) => {
                            json!({"registry": registry, "token": read_secret("token")?})
                        }
                        _ => bail!(
                            "give --username USER (password on stdin) or --token (token on stdin)"
                        ),
                    };
                    print(
                        o,
                        &c.call(Method::POST, "/api/registry-credentials", Some(&body))
                            .await?,
                        cols,
                    );
                }
                CredCmd::Delete { id } => {
                    c.call(
                        Method::DELETE,
                        &format!("/api/registry-credentials/{id}"),
                        nobody,
                    )
                    .await?;
                }
            }
        }
        Cmd::Role(cmd) => match cmd {
            RoleCmd::List => print(o, &c.get("/api/roles").await?, ROLE_COLS),
            RoleCmd::Get { role } => {
                let v = c.get(&format!("/api/roles/{role}")).await?;
                print(
                    o,
                    &v,
                    &[
                        ("NAME", "name"),
                        ("IMAGE", "image_name"),
                        ("USER DATA", "user_data"),
                        ("VENDOR DATA", "vendor_data"),
                    ],
                );
            }
            RoleCmd::Create(a) => print(
                o,
                &c.call(Method::POST, "/api/roles", Some(&a.body()?)).await?,
                ROLE_COLS,
            ),
            RoleCmd::Update { role, args } => print(
                o,
                &c.call(
                    Method::PUT,
                    &format!("/api/roles/{role}"),
                    Some(&args.body()?),
                )
                .await?,
                ROLE_COLS,
            ),
            RoleCmd::Delete { role } => {
                c.call(Method::DELETE, &format!("/api/roles/{role}"), nobody)
                    .await?;
            }
        },
        Cmd::Machine(cmd) => match cmd {
            MachineCmd::List => print(o, &c.get("/api/machines").await?, MACHINE_COLS),
            MachineCmd::Get { id } => print(
                o,
                &c.get(&format!("/api/machines/{id}")).await?,
                MACHINE_COLS,
            ),
            MachineCmd::Approve { code, roles } => {
                let v = c
                    .call(
                        Method::POST,
                        "/api/machines/approve",
                        Some(&json!({"code": code, "roles": roles})),
                    )
                    .await?;
                print(o, &v, MACHINE_COLS);
            }
            MachineCmd::SetRoles { id, roles } => {
                let v = c
                    .call(
                        Method::PUT,
                        &format!("/api/machines/{id}/roles"),
                        Some(&json!({"roles": roles})),
                    )
                    .await?;
                print(o, &v, MACHINE_COLS);
            }
            MachineCmd::Kexec { id, enabled } => {
                let v = c
                    .call(
                        Method::PATCH,
                        &format!("/api/provisioning/machines/{id}"),
                        Some(&json!({"kexec_installer": enabled})),
                    )
                    .await?;
                print(o, &v, MACHINE_COLS);
            }
            MachineCmd::RevokeCredential { id } => {
                c.call(
                    Method::DELETE,
                    &format!("/api/machines/{id}/credential"),
                    nobody,
                )
                .await?;
            }
            MachineCmd::BootInstalledSystem { id } => {
                let v = c
                    .call(
                        Method::POST,
                        &format!("/api/machines/{id}/actions"),
                        Some(&json!({"action": "boot_installed_system"})),
                    )
                    .await?;
                print(
                    o,
                    &v,
                    &[("ACTION", "action"), ("STATUS", "status"), ("ID", "id")],
                );
            }
            MachineCmd::Reboot { id } => {
                let v = c
                    .call(
                        Method::POST,
                        &format!("/api/machines/{id}/actions"),
                        Some(&json!({"action": "reboot"})),
                    )
                    .await?;
                print(
                    o,
                    &v,
                    &[("ACTION", "action"), ("STATUS", "status"), ("ID", "id")],
                );
            }
            MachineCmd::Delete { id } => {
                c.call(Method::DELETE, &format!("/api/machines/{id}"), nobody)
                    .await?;
            }
        },
        Cmd::Provision(cmd) => match cmd {
            ProvisionCmd::Start {
                machine,
                yes,
                watch: follow,
            } => {
                let path = format!("/api/machines/{machine}/provision");
                let v = match c
                    .call(
                        Method::POST,
                        &path,
                        Some(&json!({"confirm_overwrite": yes})),
                    )
                    .await
                {
                    Ok(v) => v,
                    Err(e) => {
                        let needs_confirm = e.downcast_ref::<ApiFailure>().is_some_and(|f| {
                            f.status == StatusCode::CONFLICT && f.message.contains("overwrites")
                        });
                        if !needs_confirm {
                            return Err(e);
                        }
                        eprintln!(
                            "WARNING: machine {machine} was provisioned before. Re-provisioning OVERWRITES ALL DATA on its disk."
                        );
                        if !std::io::stdin().is_terminal() {
                            bail!("not confirmed: run again with --yes to overwrite the disk");
                        }
                        eprint!("Type 'yes' to continue: ");
                        std::io::stderr().flush()?;
                        let mut answer = String::new();
                        std::io::stdin().lock().read_line(&mut answer)?;
                        if answer.trim() != "yes" {
                            bail!("not confirmed; nothing done");
                        }
                        c.call(
                            Method::POST,
                            &path,
                            Some(&json!({"confirm_overwrite": true})),
                        )
                        .await?
                    }
                };
                print(o, &v, RUN_COLS);
                if follow {
                    watch(&c, v["id"].as_str().context("run without id")?).await?;
                }
            }
            ProvisionCmd::List { machine } => print(
                o,
                &c.get(&format!("/api/machines/{machine}/runs")).await?,
                RUN_COLS,
            ),
            ProvisionCmd::Get { run } => {
                let v = c.get(&format!("/api/runs/{run}")).await?;
                print(o, &v, RUN_COLS);
                if o == Output::Table {
                    println!();
                    print(o, &v["steps"], &[("STEP", "name"), ("STATE", "state")]);
                    println!();
                    print(
                        o,
                        &v["events"],
                        &[
                            ("SEQ", "seq"),
                            ("AT", "at"),
                            ("EVENT", "event.type"),
                            ("STEP", "event.step"),
                            ("%", "event.percent"),
                            ("DETAIL", "event.error"),
                        ],
                    );
                }
            }
            ProvisionCmd::Watch { run } => watch(&c, &run).await?,
        },
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("kilnctl: {e:#}");
        std::process::exit(1);
    }
}
