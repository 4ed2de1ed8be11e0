//! Versioned protocol types shared by the agent and the control plane (see docs/protocol.md).
//!
//! Everything here is plain data: serde types with uuid and time fields, no I/O, so the crate
//! builds for the static musl agent. The control plane enables the `openapi` feature to
//! describe the same types in its OpenAPI document.
//!
//! Wire format: JSON over HTTPS. The agent sends its protocol version in the
//! [`VERSION_HEADER`] header; the server refuses versions it does not speak with
//! `426 Upgrade Required` and the list of versions it does.

use serde::{Deserialize, Serialize};
use std::fmt;
use time::OffsetDateTime;
use uuid::Uuid;

/// The protocol version this crate describes.
pub const PROTOCOL_VERSION: u32 = 1;
/// HTTP header carrying the agent's protocol version.
pub const VERSION_HEADER: &str = "kiln-protocol-version";
/// Base path of the agent API for [`PROTOCOL_VERSION`].
pub const AGENT_API_BASE: &str = "/api/agent/v1";

/// Hardware inventory reported by the agent at registration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Inventory {
    pub hostname: Option<String>,
    /// Machine architecture, e.g. `x86_64`.
    pub arch: String,
    /// `uefi` or `bios`.
    pub firmware: Option<String>,
    pub cpu_model: Option<String>,
    pub cpu_cores: u32,
    pub memory_bytes: u64,
    /// SMBIOS system vendor / product / serial / uuid.
    pub system_vendor: Option<String>,
    pub system_product: Option<String>,
    pub system_serial: Option<String>,
    pub system_uuid: Option<String>,
    #[serde(default)]
    pub disks: Vec<Disk>,
    #[serde(default)]
    pub nics: Vec<Nic>,
}

/// One block device seen by the agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Disk {
    /// Kernel name, e.g. `nvme0n1`.
    pub name: String,
    pub size_bytes: u64,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub rotational: bool,
}

/// One network interface seen by the agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Nic {
    pub name: String,
    /// MAC address, lower-case, colon separated.
    pub mac: String,
    pub speed_mbps: Option<u32>,
}

/// `POST /api/agent/v1/register`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterRequest {
    /// A bootstrap token (JWE compact). With a valid token the machine is approved at once;
    /// without one it waits for approval by code.
    pub token: Option<String>,
    pub inventory: Inventory,
}

/// Answer to [`RegisterRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RegisterResponse {
    /// Token registration: approved, here is the machine credential (shown only once).
    Approved {
        machine_uuid: Uuid,
        credential: String,
    },
    /// Waiting for an operator to enter `approval_code`. Poll `claim` with `claim_secret`.
    PendingApproval {
        machine_uuid: Uuid,
        approval_code: String,
        #[serde(with = "time::serde::rfc3339")]
        #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
        code_expires_at: OffsetDateTime,
        claim_secret: String,
    },
}

/// `POST /api/agent/v1/claim`: fetch the credential once the machine is approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimRequest {
    pub machine_uuid: Uuid,
    pub claim_secret: String,
}

/// Answer to [`ClaimRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ClaimResponse {
    /// Not approved yet. A fresh code is issued when the old one expired.
    PendingApproval {
        approval_code: String,
        #[serde(with = "time::serde::rfc3339")]
        #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
        code_expires_at: OffsetDateTime,
    },
    /// Approved: the machine credential, handed out exactly once.
    Approved { credential: String },
}

/// `POST /api/agent/v1/credential/rotate` answer: the new machine credential. The old one
/// stops working at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CredentialResponse {
    pub credential: String,
}

/// Where the agent runs when it heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AgentEnvironment {
    /// The installer / maintenance environment (the kernel with embedded initramfs).
    Installer,
    /// The installed operating system.
    Installed,
}

/// `POST /api/agent/v1/heartbeat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Heartbeat {
    pub environment: AgentEnvironment,
    pub agent_version: Option<String>,
}

/// Answer to [`Heartbeat`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatResponse {
    /// Seconds until the next heartbeat is expected; the machine is shown offline after
    /// three missed ones.
    pub interval_secs: u64,
}

/// `GET /api/agent/v1/orders?after=VERSION&wait=SECS` answer.
///
/// The server answers at once when its order version differs from `after`, else it waits
/// up to `wait` seconds (max 60) for a change and then answers with the same version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrdersResponse {
    /// Changes whenever the orders of this machine change; pass it back as `after`.
    pub version: u64,
    pub order: Option<Order>,
}

/// What the control plane wants the agent to do now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Order {
    /// Install the operating system (a provisioning run).
    Provision(Box<ProvisionOrder>),
    /// kexec from the installer / maintenance environment back into the installed system.
    BootInstalledSystem { action_id: Uuid },
    /// Reboot the machine.
    Reboot { action_id: Uuid },
}

/// A provisioning run to carry out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProvisionOrder {
    pub run_id: Uuid,
    pub image: ImageSource,
    /// Merged cloud-init user-data of all roles of the machine.
    pub user_data: Option<String>,
    /// Merged cloud-init vendor-data of all roles of the machine.
    pub vendor_data: Option<String>,
    /// Re-provisioning from an installed system may kexec into the installer.
    pub kexec_installer: bool,
    /// Highest progress sequence number the server has stored for this run: resume after it.
    pub acked_seq: u64,
}

/// The image to install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImageSource {
    /// Image name in the catalog.
    pub name: String,
    /// OCI reference, e.g. `ghcr.io/org/ubuntu:24.04`.
    pub oci_url: Option<String>,
    /// Credential for the registry of `oci_url`, when the image has one.
    pub registry_auth: Option<RegistryAuth>,
    /// A raw disk image URL with checksum (for agents that support it).
    pub raw_disk: Option<RawDisk>,
}

/// Registry credential handed to the agent (and only to the agent of a machine provisioning
/// an image that names it).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RegistryAuth {
    Basic { username: String, password: String },
    Token { token: String },
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryAuth::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            RegistryAuth::Token { .. } => f
                .debug_struct("Token")
                .field("token", &"<redacted>")
                .finish(),
        }
    }
}

/// A raw disk image with its checksum, as Metal3's OSImage describes one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RawDisk {
    pub url: String,
    /// Lower-case hex digest.
    pub checksum: String,
    pub checksum_type: ChecksumType,
}

/// Checksum algorithm of a raw disk image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ChecksumType {
    Md5,
    Sha256,
    Sha512,
}

impl ChecksumType {
    /// The type implied by a hex digest's length (32 md5, 64 sha256, 128 sha512).
    pub fn from_hex_len(len: usize) -> Option<Self> {
        match len {
            32 => Some(Self::Md5),
            64 => Some(Self::Sha256),
            128 => Some(Self::Sha512),
            _ => None,
        }
    }

    /// Length in hex characters of a digest of this type.
    pub fn hex_len(self) -> usize {
        match self {
            Self::Md5 => 32,
            Self::Sha256 => 64,
            Self::Sha512 => 128,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "md5",
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "md5" => Some(Self::Md5),
            "sha256" => Some(Self::Sha256),
            "sha512" => Some(Self::Sha512),
            _ => None,
        }
    }
}

/// The steps of a provisioning run, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Step {
    ImageInspection,
    BootloaderStreaming,
    PartitionResize,
    LayerExtraction,
    CloudInitConfiguration,
    AgentInjection,
    SyncAndReboot,
}

impl Step {
    /// All steps in execution order.
    pub const ALL: [Step; 7] = [
        Step::ImageInspection,
        Step::BootloaderStreaming,
        Step::PartitionResize,
        Step::LayerExtraction,
        Step::CloudInitConfiguration,
        Step::AgentInjection,
        Step::SyncAndReboot,
    ];

    /// The snake_case wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::ImageInspection => "image_inspection",
            Step::BootloaderStreaming => "bootloader_streaming",
            Step::PartitionResize => "partition_resize",
            Step::LayerExtraction => "layer_extraction",
            Step::CloudInitConfiguration => "cloud_init_configuration",
            Step::AgentInjection => "agent_injection",
            Step::SyncAndReboot => "sync_and_reboot",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|step| step.as_str() == s)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::ImageInspection => "Image inspection",
            Step::BootloaderStreaming => "Bootloader streaming",
            Step::PartitionResize => "Partition resize",
            Step::LayerExtraction => "Layer extraction",
            Step::CloudInitConfiguration => "Cloud-init configuration",
            Step::AgentInjection => "Agent injection",
            Step::SyncAndReboot => "Sync and reboot",
        })
    }
}

/// One progress event of a provisioning run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunEvent {
    StepStarted {
        step: Step,
    },
    /// Overall progress of the run in percent (0..=100).
    Progress {
        step: Step,
        percent: u8,
    },
    StepCompleted {
        step: Step,
    },
    Log {
        message: String,
    },
    Completed,
    Failed {
        error: String,
    },
}

impl fmt::Display for RunEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunEvent::StepStarted { step } => write!(f, "{step}: started"),
            RunEvent::Progress { step, percent } => write!(f, "{step}: {percent}%"),
            RunEvent::StepCompleted { step } => write!(f, "{step}: done"),
            RunEvent::Log { message } => write!(f, "{message}"),
            RunEvent::Completed => write!(f, "provisioning completed"),
            RunEvent::Failed { error } => write!(f, "provisioning failed: {error}"),
        }
    }
}

/// A [`RunEvent`] with its sequence number (1, 2, 3, ... per run, assigned by the agent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SequencedEvent {
    pub seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: OffsetDateTime,
    pub event: RunEvent,
}

/// `POST /api/agent/v1/runs/{run_id}/events`: a batch of events. Safe to retry: events with a
/// sequence number the server already has are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventBatch {
    pub events: Vec<SequencedEvent>,
}

/// Answer to [`EventBatch`]: the highest sequence number stored without a gap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventAck {
    pub acked_seq: u64,
}

/// Error body of every non-2xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_type_from_length() {
        let cases = [
            (32, Some(ChecksumType::Md5)),
            (64, Some(ChecksumType::Sha256)),
            (128, Some(ChecksumType::Sha512)),
            (40, None),
            (0, None),
        ];
        for (len, want) in cases {
            assert_eq!(ChecksumType::from_hex_len(len), want, "len {len}");
        }
    }

    #[test]
    fn step_names_round_trip() {
        for step in Step::ALL {
            assert_eq!(Step::parse(step.as_str()), Some(step));
            let json = serde_json::to_string(&step).unwrap();
            assert_eq!(json, format!("\"{}\"", step.as_str()));
        }
        assert_eq!(Step::parse("nope"), None);
    }

    #[test]
    fn order_wire_format() {
        let id = Uuid::nil();
        let json = serde_json::to_value(Order::Reboot { action_id: id }).unwrap();
        assert_eq!(json["kind"], "reboot");
        let ev = SequencedEvent {
            seq: 3,
            at: OffsetDateTime::UNIX_EPOCH,
            event: RunEvent::Progress {
                step: Step::LayerExtraction,
                percent: 40,
            },
        };
        let text = serde_json::to_string(&ev).unwrap();
        assert_eq!(
            text,
            r#"{"seq":3,"at":"1970-01-01T00:00:00Z","event":{"type":"progress","step":"layer_extraction","percent":40}}"#
        );
        let back: SequencedEvent = serde_json::from_str(&text).unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn registry_auth_debug_redacts() {
        let auth = RegistryAuth::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{auth:?}").contains("hunter2"));
        let auth = RegistryAuth::Token {
            token: "tok-secret".into(),
        };
        assert!(!format!("{auth:?}").contains("tok-secret"));
    }
}
