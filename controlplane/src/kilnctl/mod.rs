//! `kilnctl`, the command line client of the Kiln control plane: the command tree and one
//! module per noun, each command a short function over [`Client`]. Tables by default,
//! `-o json` for scripts.

mod account;
mod api_key;
mod image;
mod installer;
mod machine;
mod provision;
mod registry_credential;
mod role;
mod server;
mod settings;
mod table;
mod token;
mod token_key;

use crate::client::{Client, Trust};
use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser, Subcommand};
use std::path::PathBuf;
pub use table::Output;

#[derive(Parser, Debug)]
#[command(name = "kilnctl", version, about = "Manage a Kiln control plane")]
pub struct Cli {
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

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Server version, URL and CA pin.
    Info,
    /// Accounts (admin).
    #[command(subcommand)]
    Account(account::Cmd),
    /// API keys of your account.
    #[command(subcommand, name = "api-key")]
    ApiKey(api_key::Cmd),
    /// Bootstrap tokens.
    #[command(subcommand)]
    Token(token::Cmd),
    /// Token encryption keys (admin).
    #[command(subcommand, name = "token-key")]
    TokenKey(token_key::Cmd),
    /// Account settings (default image).
    #[command(subcommand)]
    Settings(settings::Cmd),
    /// Image catalog.
    #[command(subcommand)]
    Image(image::Cmd),
    /// Registry credentials (secrets are read from stdin, never from arguments).
    #[command(subcommand, name = "registry-credential")]
    RegistryCredential(registry_credential::Cmd),
    /// Machine roles.
    #[command(subcommand)]
    Role(role::Cmd),
    /// Machines.
    #[command(subcommand, visible_alias = "machines")]
    Machine(machine::Cmd),
    /// Provisioning runs.
    #[command(subcommand)]
    Provision(provision::Cmd),
    /// Installer artifacts on the server.
    Artifacts,
    /// Installer media with this server's URL and CA pin baked in.
    #[command(subcommand)]
    Installer(installer::Cmd),
    /// Print shell completions.
    Completions {
        /// Shell to write completions for.
        shell: clap_complete::Shell,
    },
}

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    if let Cmd::Completions { shell } = cli.cmd {
        let out = &mut std::io::stdout();
        clap_complete::generate(shell, &mut Cli::command(), "kilnctl", out);
        return Ok(());
    }
    let c = connect(&cli).await?;
    let o = cli.output;
    match cli.cmd {
        Cmd::Completions { .. } => unreachable!("handled above"),
        Cmd::Info => server::info(&c, o).await,
        Cmd::Artifacts => server::artifacts(&c, o).await,
        Cmd::Installer(cmd) => cmd.run(&c, o).await,
        Cmd::Account(cmd) => cmd.run(&c, o).await,
        Cmd::ApiKey(cmd) => cmd.run(&c, o).await,
        Cmd::Token(cmd) => cmd.run(&c, o).await,
        Cmd::TokenKey(cmd) => cmd.run(&c, o).await,
        Cmd::Settings(cmd) => cmd.run(&c, o).await,
        Cmd::Image(cmd) => cmd.run(&c, o).await,
        Cmd::RegistryCredential(cmd) => cmd.run(&c, o).await,
        Cmd::Role(cmd) => cmd.run(&c, o).await,
        Cmd::Machine(cmd) => cmd.run(&c, o).await,
        Cmd::Provision(cmd) => cmd.run(&c, o).await,
    }
}

/// The client of the server the command line names, trusting its CA file or pin.
async fn connect(cli: &Cli) -> Result<Client> {
    let trust = match (&cli.ca_cert, &cli.ca_sha256) {
        (Some(p), _) => Trust::CaPem(
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        ),
        (None, Some(pin)) => Trust::Pin(pin.clone()),
        (None, None) => bail!(
            "give the server CA with --ca-cert FILE or --ca-sha256 PIN (printed by kiln-server)"
        ),
    };
    Client::new(&cli.server, trust, cli.api_key.clone()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_is_consistent_and_documented() {
        Cli::command().debug_assert();
        fn check(cmd: &clap::Command, path: &str) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id != "help" && id != "version" {
                    assert!(a.get_help().is_some(), "{path} {id} has no help text");
                }
            }
            for s in cmd.get_subcommands() {
                if s.get_name() != "help" {
                    assert!(
                        s.get_about().is_some(),
                        "{path} {} has no help",
                        s.get_name()
                    );
                    check(s, &format!("{path} {}", s.get_name()));
                }
            }
        }
        check(&Cli::command(), "kilnctl");
    }

    #[test]
    fn machines_is_an_alias_of_machine() {
        let cli = Cli::try_parse_from(["kilnctl", "machines", "list"]).unwrap();
        assert!(matches!(cli.cmd, Cmd::Machine(machine::Cmd::List)));
    }
}
