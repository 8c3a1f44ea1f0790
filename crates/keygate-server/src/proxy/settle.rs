//! The settle-once guard. From the moment the proxy forwards a call, the call is owned by
//! a [`Finish`]: answered, failed, cut off or abandoned by its caller (the handler or the
//! response stream dropped), its demo reservation or rate-limit slot is settled and its
//! usage recorded exactly once, through [`Services::finish`].

use axum::http::StatusCode;
use keygate_core::usage::Tokens;
use keygate_service::gateway::{Admitted, CallOutcome};
use keygate_service::Services;
use std::sync::Arc;
use std::time::Instant;

pub(crate) struct Finish {
    services: Arc<Services>,
    pub call: Admitted,
    /// The provider's status, once it answered.
    pub status: Option<StatusCode>,
    pub model: Option<String>,
    /// The request body's size, for an estimate when no count was reported.
    pub request_bytes: usize,
    started: Instant,
    settled: bool,
    /// Handed to the outbound client (see [`Finish::sending`]).
    sent: bool,
    /// Dropped after it was sent and before the provider's answer came back: the caller
    /// left while the call was on its way (see `CallOutcome::abandoned`).
    abandoned: bool,
}

impl Finish {
    pub fn new(
        services: Arc<Services>,
        call: Admitted,
        model: Option<String>,
        request_bytes: usize,
        started: Instant,
    ) -> Self {
        Self {
            services,
            call,
            status: None,
            model,
            request_bytes,
            started,
            settled: false,
            sent: false,
            abandoned: false,
        }
    }

    /// The call is going out: from now on a caller who leaves before the answer leaves a
    /// call the provider may be doing (and billing). A call dropped before this (keygate
    /// refused it on its own) is refunded like any call that never reached the provider.
    pub fn sending(&mut self) {
        self.sent = true;
    }

    /// Settles the call with `tokens`; any later call does nothing.
    pub fn settle(&mut self, tokens: Tokens) {
        if !std::mem::replace(&mut self.settled, true) {
            let outcome = CallOutcome {
                status: self.status,
                model: self.model.take(),
                tokens,
                latency: self.started.elapsed(),
                abandoned: self.abandoned,
            };
            self.services.finish(&self.call, outcome);
        }
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        // Unsettled and no answer yet: the handler was dropped (its caller hung up) while
        // the call was being sent or awaited. The provider may well be doing the work.
        self.abandoned = self.sent && self.status.is_none();
        self.settle(Tokens::default());
    }
}
