//! `kilnctl provision`: provisioning runs (start, list, show, follow).

use super::table::{Columns, Output, cell, maybe_time, print, print_list, time};
use crate::api::machines::{ProvisionRequest, Run, RunEventRecord, RunStatus, StepStatus};
use crate::client::{ApiFailure, Client};
use anyhow::{Result, bail};
use clap::Subcommand;
use kiln_protocol::RunEvent;
use reqwest::{Method, StatusCode};
use std::io::{BufRead, IsTerminal, Write};

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Provision a machine (asks before overwriting an installed system).
    Start {
        /// Machine id.
        machine: String,
        /// Confirm overwriting the disk without asking.
        #[arg(long)]
        yes: bool,
        /// Follow the run.
        #[arg(long)]
        watch: bool,
    },
    /// Runs of a machine.
    List {
        /// Machine id.
        machine: String,
    },
    /// A run with its event history.
    Get {
        /// Run id.
        run: String,
    },
    /// Follow a run live with a progress bar until it ends.
    Watch {
        /// Run id.
        run: String,
    },
}

const RUN: Columns<Run> = &[
    ("ID", |r| r.id.to_string()),
    ("STATUS", |r| r.status.as_str().into()),
    ("PERCENT", |r| r.percent.to_string()),
    ("STEP", |r| cell(&r.current_step)),
    ("IMAGE", |r| r.image_name.clone()),
    ("STARTED", |r| maybe_time(&r.started_at)),
    ("FINISHED", |r| maybe_time(&r.finished_at)),
    ("ERROR", |r| cell(&r.error)),
];

const STEP: Columns<StepStatus> = &[("STEP", |s| s.name.clone()), ("STATE", |s| cell(&s.state))];

const EVENT: Columns<RunEventRecord> = &[
    ("SEQ", |e| e.seq.to_string()),
    ("AT", |e| time(&e.at)),
    ("EVENT", |e| cell(&kind(&e.event))),
    ("STEP", |e| cell(&step(&e.event))),
    ("%", |e| cell(&percent(&e.event))),
    ("DETAIL", |e| cell(&error(&e.event))),
];

/// The event's `type` as the API writes it.
fn kind(e: &RunEvent) -> &'static str {
    match e {
        RunEvent::StepStarted { .. } => "step_started",
        RunEvent::Progress { .. } => "progress",
        RunEvent::StepCompleted { .. } => "step_completed",
        RunEvent::Log { .. } => "log",
        RunEvent::Completed => "completed",
        RunEvent::Failed { .. } => "failed",
    }
}

fn step(e: &RunEvent) -> Option<kiln_protocol::Step> {
    match e {
        RunEvent::StepStarted { step }
        | RunEvent::Progress { step, .. }
        | RunEvent::StepCompleted { step } => Some(*step),
        _ => None,
    }
}

fn percent(e: &RunEvent) -> Option<u8> {
    match e {
        RunEvent::Progress { percent, .. } => Some(*percent),
        _ => None,
    }
}

fn error(e: &RunEvent) -> Option<&str> {
    match e {
        RunEvent::Failed { error } => Some(error),
        _ => None,
    }
}

impl Cmd {
    pub async fn run(self, c: &Client, o: Output) -> Result<()> {
        match self {
            Cmd::Start {
                machine,
                yes,
                watch: follow,
            } => {
                let run = start(c, &machine, yes).await?;
                print(o, &run, RUN);
                if follow {
                    watch(c, &run.id.to_string()).await?;
                }
            }
            Cmd::List { machine } => {
                let runs: Vec<Run> = c.get_as(&format!("/api/machines/{machine}/runs")).await?;
                print_list(o, &runs, RUN);
            }
            Cmd::Get { run } => show(c, o, &run).await?,
            Cmd::Watch { run } => watch(c, &run).await?,
        }
        Ok(())
    }
}

/// Starts a run; when it would overwrite an installed system, asks first.
async fn start(c: &Client, machine: &str, yes: bool) -> Result<Run> {
    let path = format!("/api/machines/{machine}/provision");
    let ask = |confirm_overwrite| ProvisionRequest { confirm_overwrite };
    let e = match c.call_as(Method::POST, &path, Some(&ask(yes))).await {
        Ok(run) => return Ok(run),
        Err(e) => e,
    };
    let needs_confirm = e
        .downcast_ref::<ApiFailure>()
        .is_some_and(|f| f.status == StatusCode::CONFLICT && f.message.contains("overwrites"));
    if !needs_confirm {
        return Err(e);
    }
    confirm_overwrite(machine)?;
    c.call_as(Method::POST, &path, Some(&ask(true))).await
}

/// Asks on the terminal whether to overwrite the machine's disk.
fn confirm_overwrite(machine: &str) -> Result<()> {
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
    Ok(())
}

/// A run, and in a table its steps and events too.
async fn show(c: &Client, o: Output, run: &str) -> Result<()> {
    let v: Run = c.get_as(&format!("/api/runs/{run}")).await?;
    print(o, &v, RUN);
    if o == Output::Table {
        println!();
        print_list(o, &v.steps, STEP);
        println!();
        print_list(o, v.events.as_deref().unwrap_or_default(), EVENT);
    }
    Ok(())
}

/// Follows a run with a progress bar (plain lines when not on a terminal) until it ends.
async fn watch(c: &Client, run: &str) -> Result<()> {
    let bar = indicatif::ProgressBar::new(100);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{bar:40}] {pos:>3}% {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    let mut shown = 0usize;
    loop {
        let r: Run = c.get_as(&format!("/api/runs/{run}")).await?;
        let events = r.events.as_deref().unwrap_or_default();
        for e in &events[shown.min(events.len())..] {
            if !matches!(e.event, RunEvent::Progress { .. }) {
                let line = format!("{} {}", time(&e.at), e.event);
                // A hidden bar (output not a terminal) prints nothing: log plain lines.
                if bar.is_hidden() {
                    println!("{line}");
                } else {
                    bar.println(line);
                }
            }
        }
        shown = events.len();
        bar.set_position(r.percent.into());
        let step = r
            .current_step
            .map(|s| s.to_string())
            .unwrap_or_else(|| "waiting for the agent".into());
        bar.set_message(format!("{} ({})", step, r.status.as_str()));
        match r.status {
            RunStatus::Completed => {
                bar.finish_with_message("completed");
                return Ok(());
            }
            RunStatus::Failed => {
                bar.abandon_with_message("failed");
                bail!("run {run} failed: {}", cell(&r.error));
            }
            _ => {}
        }
        bar.tick();
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_protocol::Step;

    #[test]
    fn event_columns_read_like_the_json() {
        for e in [
            RunEvent::StepStarted {
                step: Step::ImageInspection,
            },
            RunEvent::Progress {
                step: Step::ImageInspection,
                percent: 40,
            },
            RunEvent::StepCompleted {
                step: Step::ImageInspection,
            },
            RunEvent::Log {
                message: "m".into(),
            },
            RunEvent::Completed,
            RunEvent::Failed { error: "e".into() },
        ] {
            let v = serde_json::to_value(&e).unwrap();
            assert_eq!(cell(&kind(&e)), cell(&v["type"]));
            assert_eq!(cell(&step(&e)), cell(&v["step"]));
            assert_eq!(cell(&percent(&e)), cell(&v["percent"]));
            assert_eq!(cell(&error(&e)), cell(&v["error"]));
        }
    }
}
