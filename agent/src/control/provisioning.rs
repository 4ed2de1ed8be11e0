//! A `provision` order carried out with the provisioning engine ([`crate::provision`]):
//! the order's OCI image (its registry credential handed to kiln-oci), the disk chosen by
//! the `kiln.disk=` hints with the default policy, the order's user-data and vendor-data in
//! the NoCloud seed, and this agent injected with a config that lets the installed system's
//! agent reconnect (server URL, CA pin, machine id, credential).
//!
//! Progress goes to the console as [`Event::Provision`] and to the server as run events
//! ([`super::steps`] → [`super::uplink`]); the run ends with `completed` or `failed` (the
//! error names the reference, disk or file) once the server acknowledged everything.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kiln_oci::registry::{Client as RegistryClient, ClientConfig, Credentials, HostConfig, Secret};
use kiln_protocol::{ProvisionOrder, RegistryAuth, RunEvent, Step};

use super::api::{Api, CallError};
use super::config::{Config, Identity};
use super::steps::Steps;
use super::uplink::{Flusher, Uplink, drain};
use crate::events::{Event, Reporter};
use crate::provision::bootplan::BootPlan;
use crate::provision::cloudinit::Seed;
use crate::provision::driver;
use crate::provision::events::Phase;
use crate::provision::inject::InjectSpec;
use crate::provision::run::provision;
use crate::provision::source;

/// How a run ended, as reported to the server.
#[derive(Debug)]
pub enum RunOutcome {
    /// `completed`: the installed system's boot plan.
    Completed(BootPlan),
    /// `failed` with this error.
    Failed(String),
}

/// kiln-oci credentials for the order's registry auth.
pub fn credentials(auth: &RegistryAuth) -> Credentials {
    match auth {
        RegistryAuth::Basic { username, password } => Credentials {
            username: username.clone(),
            password: Secret::new(password.clone()),
        },
        // A registry token (PAT / identity token) goes as the password of the conventional
        // `<token>` user, which GHCR, ACR and Harbor accept for Basic and token exchange.
        RegistryAuth::Token { token } => Credentials {
            username: "<token>".into(),
            password: Secret::new(token.clone()),
        },
    }
}

/// The registry client for `reference`: plain HTTP for the configured insecure registries,
/// the order's credentials for the reference's registry.
pub fn registry_client(
    reference: &str,
    insecure: &[String],
    auth: Option<&RegistryAuth>,
) -> Result<RegistryClient> {
    let mut hosts: HashMap<String, HostConfig> = insecure
        .iter()
        .map(|h| {
            (
                h.clone(),
                HostConfig {
                    plain_http: true,
                    ..HostConfig::default()
                },
            )
        })
        .collect();
    if let Some(a) = auth {
        let r: kiln_oci::reference::Reference = reference
            .parse()
            .with_context(|| format!("image reference {reference:?}"))?;
        for host in [r.registry().to_string(), r.api_host().to_string()] {
            hosts.entry(host).or_default().credentials = Some(credentials(a));
        }
    }
    Ok(RegistryClient::new(ClientConfig {
        hosts,
        ..ClientConfig::default()
    }))
}

/// Runs the order and reports it. Returns the outcome once the server acknowledged every
/// event; an error only when the events could not be delivered (a `401` among them: the
/// caller registers again and the order, still active, comes back).
pub fn run(
    order: &ProvisionOrder,
    cfg: &Config,
    id: &Identity,
    api: Arc<dyn Api>,
    reporter: Arc<Reporter>,
) -> Result<RunOutcome, CallError> {
    let uplink = Arc::new(Mutex::new(Uplink::new(order.run_id, order.acked_seq)));
    let steps = Arc::new(Mutex::new(Steps::new()));
    let push = {
        let uplink = uplink.clone();
        move |events: Vec<RunEvent>| {
            uplink
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(events)
        }
    };
    push(
        steps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .enter(Step::ImageInspection),
    );
    let sink: source::Sink = {
        let push = push.clone();
        let steps = steps.clone();
        let reporter = reporter.clone();
        Arc::new(move |e: crate::provision::Event| {
            let events = steps.lock().unwrap_or_else(|x| x.into_inner()).on_event(&e);
            push(events);
            reporter.emit(Event::Provision { detail: e });
        })
    };
    let result = {
        let _flusher = Flusher::start(
            uplink.clone(),
            api.clone(),
            id.clone(),
            Duration::from_secs(1),
        );
        install(order, cfg, id, &sink)
    };
    let outcome = match result {
        Ok(plan) => {
            rustix::fs::sync();
            let mut events = steps.lock().unwrap_or_else(|e| e.into_inner()).finish();
            events.push(RunEvent::Completed);
            push(events);
            RunOutcome::Completed(plan)
        }
        Err(e) => {
            let error = format!("{e:#}");
            push(vec![RunEvent::Failed {
                error: error.clone(),
            }]);
            RunOutcome::Failed(error)
        }
    };
    // The outcome must reach the server: keep trying for a long while.
    drain(
        &uplink,
        api.as_ref(),
        id,
        Instant::now() + Duration::from_secs(30 * 60),
    )?;
    Ok(outcome)
}

/// The engine's work for the order.
fn install(
    order: &ProvisionOrder,
    cfg: &Config,
    id: &Identity,
    sink: &source::Sink,
) -> Result<BootPlan> {
    let progress = |e: crate::provision::Event| sink(e);
    let image = &order.image;
    let reference = image.oci_url.as_deref().with_context(|| {
        format!(
            "image \"{}\" has no OCI reference (oci_url); this agent installs OCI images only",
            image.name
        )
    })?;
    let client = registry_client(
        reference,
        &cfg.insecure_registries,
        image.registry_auth.as_ref(),
    )?;
    let resolved = source::resolve(&client, reference)?;
    progress(crate::provision::Event::msg(
        Phase::Inventory,
        format!(
            "image {} ({}): {} layers, layer 0 {}",
            image.name,
            resolved.reference,
            resolved.layers.len(),
            driver::layer0_form(&resolved.layer0)
        ),
    ));
    let peek = source::peek_layer0(&client, &resolved)?;
    let disk = driver::choose_disk(
        peek,
        reference,
        cfg.disk_hints.as_deref().unwrap_or(""),
        &progress,
    )?;
    let mut installed = cfg.clone();
    installed.identity = Some(id.clone());
    installed.token = None;
    let seed = Seed {
        instance_id: format!("kiln-{}", order.run_id),
        hostname: None,
        user_data: order
            .user_data
            .clone()
            .unwrap_or_else(|| "#cloud-config\n{}\n".into()),
        network_config: None,
        vendor_data: order.vendor_data.clone(),
    };
    let inject = InjectSpec {
        binary: PathBuf::from("/proc/self/exe"),
        config: installed.to_file(),
        args: vec!["serve".into()],
    };
    let engine_order = driver::order(
        &disk.path,
        &resolved.settings,
        driver::Overrides::default(),
        Some(seed),
        Some(inject),
        &cfg.work_dir.join(order.run_id.to_string()),
    );
    let (layer0, mut rest) = source::layers(&client, &resolved, sink.clone())?;
    let out = provision(&engine_order, layer0, &mut rest, &progress)
        .with_context(|| format!("installing {reference} onto {}", disk.path.display()))?;
    Ok(out.plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_auth_maps_to_kiln_oci_credentials_without_leaking() {
        let basic = RegistryAuth::Basic {
            username: "robot".into(),
            password: "PASS-SECRET".into(),
        };
        let c = credentials(&basic);
        assert_eq!(c.username, "robot");
        assert_eq!(c.password.expose(), "PASS-SECRET");
        let tok = credentials(&RegistryAuth::Token {
            token: "TOK-SECRET".into(),
        });
        assert_eq!(tok.password.expose(), "TOK-SECRET");
        let client = registry_client(
            "reg.lab:5000/kiln/img:1",
            &["reg.lab:5000".into()],
            Some(&basic),
        )
        .unwrap();
        let dbg = format!("{client:?} {c:?} {tok:?} {basic:?}");
        assert!(!dbg.contains("SECRET"), "{dbg}");
        let h = &client.config().hosts["reg.lab:5000"];
        assert!(h.plain_http);
        assert_eq!(h.credentials.as_ref().unwrap().username, "robot");
        // A registry without credentials or plain HTTP gets neither.
        let c2 = registry_client("ghcr.io/kiln/img:1", &[], None).unwrap();
        assert!(c2.config().hosts.is_empty());
        let e = registry_client("Bad Ref", &[], Some(&basic)).unwrap_err();
        assert!(format!("{e:#}").contains("Bad Ref"), "{e:#}");
    }
}
