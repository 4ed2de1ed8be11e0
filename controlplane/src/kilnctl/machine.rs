//! `kilnctl machine` (also `kilnctl machines`): machines.

use super::table::{Columns, Output, cell, maybe_time, print, print_list};
use crate::api::machines::{
    Action, ActionKind, ApproveRequest, CreateAction, Machine, PatchMachine, SetRoles,
};
use crate::client::Client;
use anyhow::Result;
use clap::Subcommand;
use reqwest::Method;

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// List the machines.
    List,
    /// Show a machine.
    Get {
        /// Machine id.
        id: String,
    },
    /// Approve a machine by the code on its screen.
    Approve {
        /// The 6-character code the machine shows.
        code: String,
        /// Role to assign (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// Set the complete role list.
    SetRoles {
        /// Machine id.
        id: String,
        /// The roles (none clears them).
        roles: Vec<String>,
    },
    /// Enable or disable kexec into the installer for re-provisioning.
    Kexec {
        /// Machine id.
        id: String,
        /// true or false.
        #[arg(action = clap::ArgAction::Set)]
        enabled: bool,
    },
    /// Revoke the machine's credential: it has to register again.
    RevokeCredential {
        /// Machine id.
        id: String,
    },
    /// kexec from the installer back into the installed system.
    BootInstalledSystem {
        /// Machine id.
        id: String,
    },
    /// Reboot the machine.
    Reboot {
        /// Machine id.
        id: String,
    },
    /// Delete the machine.
    Delete {
        /// Machine id.
        id: String,
    },
}

const MACHINE: Columns<Machine> = &[
    ("ID", |m| m.id.to_string()),
    ("HOSTNAME", |m| cell(&m.hostname)),
    ("STATE", |m| m.state.as_str().into()),
    ("ROLES", |m| cell(&m.roles)),
    ("KEXEC", |m| cell(&m.kexec_installer)),
    ("LAST SEEN", |m| maybe_time(&m.last_seen_at)),
];

const ACTION: Columns<Action> = &[
    ("ACTION", |a| cell(&a.action)),
    ("STATUS", |a| a.status.clone()),
    ("ID", |a| a.id.to_string()),
];

impl Cmd {
    pub async fn run(self, c: &Client, o: Output) -> Result<()> {
        let machine: Machine = match self {
            Cmd::List => {
                let list: Vec<Machine> = c.get_as("/api/machines").await?;
                print_list(o, &list, MACHINE);
                return Ok(());
            }
            Cmd::Get { id } => c.get_as(&format!("/api/machines/{id}")).await?,
            Cmd::Approve { code, roles } => {
                let body = ApproveRequest { code, roles };
                c.call_as(Method::POST, "/api/machines/approve", Some(&body))
                    .await?
            }
            Cmd::SetRoles { id, roles } => {
                let path = format!("/api/machines/{id}/roles");
                c.call_as(Method::PUT, &path, Some(&SetRoles { roles }))
                    .await?
            }
            Cmd::Kexec { id, enabled } => {
                let path = format!("/api/provisioning/machines/{id}");
                let body = PatchMachine {
                    kexec_installer: Some(enabled),
                    hostname: None,
                };
                c.call_as(Method::PATCH, &path, Some(&body)).await?
            }
            Cmd::RevokeCredential { id } => {
                return c.delete(&format!("/api/machines/{id}/credential")).await;
            }
            Cmd::BootInstalledSystem { id } => {
                return action(c, o, &id, ActionKind::BootInstalledSystem).await;
            }
            Cmd::Reboot { id } => return action(c, o, &id, ActionKind::Reboot).await,
            Cmd::Delete { id } => return c.delete(&format!("/api/machines/{id}")).await,
        };
        print(o, &machine, MACHINE);
        Ok(())
    }
}

/// Queues an action for the machine's agent.
async fn action(c: &Client, o: Output, id: &str, action: ActionKind) -> Result<()> {
    let path = format!("/api/machines/{id}/actions");
    let v: Action = c
        .call_as(Method::POST, &path, Some(&CreateAction { action }))
        .await?;
    print(o, &v, ACTION);
    Ok(())
}
