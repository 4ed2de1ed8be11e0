//! The one fake control plane of the agent's unit tests: a test's fake implements
//! [`Scripted`] for the calls it scripts, and every call it does not script answers
//! [`unscripted`]. Each [`Scripted`] type is an [`Api`] (the blanket impl below), so the
//! fakes of `register`, `session` and `uplink` share one mechanism instead of each
//! spelling out the whole protocol.

use kiln_protocol::{
    ClaimRequest, ClaimResponse, EventAck, EventBatch, Heartbeat, HeartbeatResponse,
    OrdersResponse, RegisterRequest, RegisterResponse,
};
use uuid::Uuid;

use super::api::{Api, CallError};
use super::config::Identity;

/// The answer of a fake to a call its test does not script.
pub fn unscripted<T>() -> Result<T, CallError> {
    Err(CallError::Invalid {
        what: "fake control plane".into(),
        message: "call not scripted by this test".into(),
    })
}

/// The protocol calls a test may script; the defaults answer [`unscripted`].
pub trait Scripted: Send + Sync {
    fn register(&self, _: &RegisterRequest) -> Result<RegisterResponse, CallError> {
        unscripted()
    }
    fn claim(&self, _: &ClaimRequest) -> Result<ClaimResponse, CallError> {
        unscripted()
    }
    fn heartbeat(&self, _: &Identity, _: &Heartbeat) -> Result<HeartbeatResponse, CallError> {
        unscripted()
    }
    fn orders(&self, _: &Identity, _: Option<u64>, _: u64) -> Result<OrdersResponse, CallError> {
        unscripted()
    }
    fn post_events(&self, _: &Identity, _: Uuid, _: &EventBatch) -> Result<EventAck, CallError> {
        unscripted()
    }
    fn ack_action(&self, _: &Identity, _: Uuid) -> Result<(), CallError> {
        unscripted()
    }
}

impl<T: Scripted> Api for T {
    fn register(&self, req: &RegisterRequest) -> Result<RegisterResponse, CallError> {
        Scripted::register(self, req)
    }
    fn claim(&self, req: &ClaimRequest) -> Result<ClaimResponse, CallError> {
        Scripted::claim(self, req)
    }
    fn heartbeat(&self, id: &Identity, hb: &Heartbeat) -> Result<HeartbeatResponse, CallError> {
        Scripted::heartbeat(self, id, hb)
    }
    fn orders(
        &self,
        id: &Identity,
        after: Option<u64>,
        wait_secs: u64,
    ) -> Result<OrdersResponse, CallError> {
        Scripted::orders(self, id, after, wait_secs)
    }
    fn post_events(
        &self,
        id: &Identity,
        run: Uuid,
        batch: &EventBatch,
    ) -> Result<EventAck, CallError> {
        Scripted::post_events(self, id, run, batch)
    }
    fn ack_action(&self, id: &Identity, action: Uuid) -> Result<(), CallError> {
        Scripted::ack_action(self, id, action)
    }
}
