//! Registration: with a bootstrap token the machine is approved at once; without one the
//! agent shows an approval code (a typed [`Event::ApprovalCode`]) and polls `claim` until an
//! operator approves it, showing a fresh code whenever the server issues one. The identity
//! is saved to the config's state file so a restart does not register again.

use std::time::Duration;

use anyhow::{Context, Result};
use kiln_protocol::{ClaimRequest, ClaimResponse, RegisterRequest, RegisterResponse};
use time::OffsetDateTime;

use super::api::{Api, CallError};
use super::config::{Config, Identity};
use crate::cmdline::Secret;
use crate::events::{Event, Level, Reporter};

fn expires_in(at: OffsetDateTime) -> u64 {
    (at - OffsetDateTime::now_utc()).whole_seconds().max(0) as u64
}

/// The identity: the saved one, else a new registration (`poll`: pause between claims).
pub fn ensure(
    cfg: &mut Config,
    api: &dyn Api,
    reporter: &Reporter,
    inventory: &dyn Fn() -> kiln_protocol::Inventory,
    poll: Duration,
) -> Result<Identity> {
    if let Some(id) = &cfg.identity {
        return Ok(id.clone());
    }
    let (id, via) = register(cfg, api, reporter, inventory, poll)?;
    cfg.identity = Some(id.clone());
    if let Err(e) = cfg.save() {
        reporter.emit(Event::Message {
            level: Level::Warn,
            text: format!("could not save the machine identity: {e:#}"),
        });
    }
    reporter.emit(Event::Registered {
        server: cfg.server.clone(),
        machine_uuid: id.machine_uuid.to_string(),
        via: via.into(),
    });
    Ok(id)
}

fn register(
    cfg: &Config,
    api: &dyn Api,
    reporter: &Reporter,
    inventory: &dyn Fn() -> kiln_protocol::Inventory,
    poll: Duration,
) -> Result<(Identity, &'static str)> {
    loop {
        let req = RegisterRequest {
            token: cfg.token.as_ref().map(|t| t.expose().to_string()),
            inventory: inventory(),
        };
        let resp = api.register(&req).map_err(|e| match &e {
            CallError::Unauthorized { message, .. } if cfg.token.is_some() => anyhow::anyhow!(
                "{} refused the bootstrap token (kiln.token=): {message}; create a new one with \
                 `kilnctl token create`, or remove kiln.token= to register by approval code",
                cfg.server
            ),
            _ => anyhow::Error::new(e).context(format!("registering with {}", cfg.server)),
        })?;
        let (machine_uuid, code, expires, claim_secret) = match resp {
            RegisterResponse::Approved {
                machine_uuid,
                credential,
            } => {
                return Ok((
                    Identity {
                        machine_uuid,
                        credential: Secret::new(credential),
                    },
                    "token",
                ));
            }
            RegisterResponse::PendingApproval {
                machine_uuid,
                approval_code,
                code_expires_at,
                claim_secret,
            } => (
                machine_uuid,
                approval_code,
                code_expires_at,
                Secret::new(claim_secret),
            ),
        };
        let show = |code: &str, expires: OffsetDateTime| {
            reporter.emit(Event::ApprovalCode {
                code: code.to_string(),
                expires_in_s: expires_in(expires),
                server: cfg.server.clone(),
            })
        };
        show(&code, expires);
        let mut shown = code;
        let claim = ClaimRequest {
            machine_uuid,
            claim_secret: claim_secret.expose().to_string(),
        };
        loop {
            std::thread::sleep(poll);
            match api.claim(&claim) {
                Ok(ClaimResponse::Approved { credential }) => {
                    return Ok((
                        Identity {
                            machine_uuid,
                            credential: Secret::new(credential),
                        },
                        "approval code",
                    ));
                }
                Ok(ClaimResponse::PendingApproval {
                    approval_code,
                    code_expires_at,
                }) => {
                    if approval_code != shown {
                        show(&approval_code, code_expires_at);
                        shown = approval_code;
                    }
                }
                // The machine was deleted, or its credential claimed by someone else.
                Err(
                    e @ (CallError::Unauthorized { .. } | CallError::Status { status: 409, .. }),
                ) => {
                    reporter.emit(Event::Message {
                        level: Level::Warn,
                        text: format!("{e}; registering again"),
                    });
                    break;
                }
                Err(e @ CallError::Status { .. }) | Err(e @ CallError::Invalid { .. }) => {
                    return Err(e).context(format!("waiting for approval at {}", cfg.server));
                }
                Err(e @ CallError::Unreachable { .. }) => reporter.emit(Event::Message {
                    level: Level::Warn,
                    text: format!("{e}; still waiting for approval"),
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::fake::Scripted;
    use crate::events::tests::Collect;
    use kiln_protocol::Inventory;
    use std::sync::Mutex;
    use uuid::Uuid;

    /// Register and claim answers from a script; records what was sent.
    #[derive(Default)]
    struct Script {
        register: Mutex<Vec<Result<RegisterResponse, CallError>>>,
        claims: Mutex<Vec<Result<ClaimResponse, CallError>>>,
        sent: Mutex<Vec<String>>,
    }

    impl Scripted for Script {
        fn register(&self, req: &RegisterRequest) -> Result<RegisterResponse, CallError> {
            self.sent
                .lock()
                .unwrap()
                .push(format!("register token={:?}", req.token));
            self.register.lock().unwrap().remove(0)
        }
        fn claim(&self, req: &ClaimRequest) -> Result<ClaimResponse, CallError> {
            self.sent
                .lock()
                .unwrap()
                .push(format!("claim {}", req.claim_secret));
            self.claims.lock().unwrap().remove(0)
        }
    }

    fn cfg(dir: &std::path::Path, token: Option<&str>) -> Config {
        let mut line = "kiln.url=http://cp:8080".to_string();
        if let Some(t) = token {
            line.push_str(&format!(" kiln.token={t}"));
        }
        let s = crate::cmdline::Settings::parse(&line).settings;
        Config::from_cmdline(&s, dir, None).unwrap().unwrap()
    }

    fn pending(code: &str, secret: &str) -> RegisterResponse {
        RegisterResponse::PendingApproval {
            machine_uuid: Uuid::from_u128(7),
            approval_code: code.into(),
            code_expires_at: OffsetDateTime::now_utc() + time::Duration::minutes(15),
            claim_secret: secret.into(),
        }
    }

    fn claim_pending(code: &str) -> Result<ClaimResponse, CallError> {
        Ok(ClaimResponse::PendingApproval {
            approval_code: code.into(),
            code_expires_at: OffsetDateTime::now_utc() + time::Duration::minutes(15),
        })
    }

    fn run(cfg: &mut Config, api: &Script) -> (Result<Identity>, Vec<Event>) {
        let r = Reporter::new();
        let c = Collect::default();
        r.add_sink(Box::new(c.clone()));
        let out = ensure(cfg, api, &r, &Inventory::default, Duration::from_millis(1));
        let events =
            c.0.lock()
                .unwrap()
                .iter()
                .map(|r| r.event.clone())
                .collect();
        (out, events)
    }

    #[test]
    fn token_registration_is_saved_and_reused() {
        let t = tempfile::tempdir().unwrap();
        let mut c = cfg(t.path(), Some("TOKEN"));
        let api = Script::default();
        api.register
            .lock()
            .unwrap()
            .push(Ok(RegisterResponse::Approved {
                machine_uuid: Uuid::from_u128(1),
                credential: "kmc_CRED".into(),
            }));
        let (id, events) = run(&mut c, &api);
        assert_eq!(id.unwrap().machine_uuid, Uuid::from_u128(1));
        assert!(matches!(&events[..], [Event::Registered { via, .. }] if via == "token"));
        assert_eq!(
            *api.sent.lock().unwrap(),
            ["register token=Some(\"TOKEN\")"]
        );
        // Saved: a restart (new config from the same state dir) does not register again.
        let saved = std::fs::read_to_string(t.path().join("agent.json")).unwrap();
        let s =
            crate::cmdline::Settings::parse("kiln.url=http://cp:8080 kiln.token=TOKEN").settings;
        let mut again = Config::from_cmdline(&s, t.path(), Some(&saved))
            .unwrap()
            .unwrap();
        let (id, events) = run(&mut again, &api);
        assert_eq!(id.unwrap().credential.expose(), "kmc_CRED");
        assert!(events.is_empty());
        assert_eq!(api.sent.lock().unwrap().len(), 1);
    }

    #[test]
    fn approval_code_then_fresh_code_then_credential() {
        let t = tempfile::tempdir().unwrap();
        let mut c = cfg(t.path(), None);
        let api = Script::default();
        api.register
            .lock()
            .unwrap()
            .push(Ok(pending("ABC234", "kcs_SECRET")));
        api.claims.lock().unwrap().extend([
            claim_pending("ABC234"),
            Err(CallError::Unreachable {
                what: "claim".into(),
                attempts: 6,
                message: "reset".into(),
            }),
            claim_pending("XYZ789"),
            claim_pending("XYZ789"),
            Ok(ClaimResponse::Approved {
                credential: "kmc_NEW".into(),
            }),
        ]);
        let (id, events) = run(&mut c, &api);
        assert_eq!(id.unwrap().credential.expose(), "kmc_NEW");
        let codes: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                Event::ApprovalCode {
                    code, expires_in_s, ..
                } => {
                    assert!(*expires_in_s > 800);
                    Some(code.as_str())
                }
                _ => None,
            })
            .collect();
        assert_eq!(codes, ["ABC234", "XYZ789"]);
        assert!(
            matches!(events.last(), Some(Event::Registered { via, .. }) if via == "approval code")
        );
        // The claim secret and credential never reach an event.
        let text: String = events.iter().map(|e| format!("{e} {e:?}\n")).collect();
        assert!(
            !text.contains("kcs_SECRET") && !text.contains("kmc_NEW"),
            "{text}"
        );
    }

    #[test]
    fn claimed_elsewhere_registers_again_and_bad_token_is_clear() {
        let t = tempfile::tempdir().unwrap();
        let mut c = cfg(t.path(), None);
        let api = Script::default();
        api.register.lock().unwrap().extend([
            Ok(pending("AAA222", "kcs_1")),
            Ok(pending("BBB333", "kcs_2")),
        ]);
        api.claims.lock().unwrap().extend([
            Err(CallError::Unauthorized {
                what: "claim".into(),
                message: "unknown machine or wrong claim secret; register again".into(),
            }),
            Ok(ClaimResponse::Approved {
                credential: "kmc_2".into(),
            }),
        ]);
        let (id, _) = run(&mut c, &api);
        assert_eq!(id.unwrap().credential.expose(), "kmc_2");
        assert_eq!(
            *api.sent.lock().unwrap(),
            [
                "register token=None",
                "claim kcs_1",
                "register token=None",
                "claim kcs_2"
            ]
        );

        let mut c = cfg(t.path(), Some("EXPIRED"));
        c.identity = None;
        let api = Script::default();
        api.register
            .lock()
            .unwrap()
            .push(Err(CallError::Unauthorized {
                what: "register".into(),
                message: "the bootstrap token expired at 2026-01-01".into(),
            }));
        let (e, _) = run(&mut c, &api);
        let e = format!("{:#}", e.unwrap_err());
        assert!(
            e.contains("refused the bootstrap token") && e.contains("expired"),
            "{e}"
        );
        assert!(
            !e.contains("EXPIRED"),
            "the token itself is never shown: {e}"
        );
    }
}
