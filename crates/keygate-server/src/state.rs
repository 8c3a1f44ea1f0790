//! What every handler can reach. Cheap to clone: everything inside is shared.

use crate::metrics::Metrics;
use keygate_service::Services;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct AppState {
    pub services: Arc<Services>,
    pub metrics: Arc<Metrics>,
    /// `/metrics` is served on a listener of its own ([`crate::metrics_router`]), so
    /// [`crate::router`] does not route it at all.
    pub metrics_apart: bool,
}

impl AppState {
    pub fn new(services: Arc<Services>) -> Self {
        Self { services, metrics: Arc::new(Metrics::default()), metrics_apart: false }
    }

    /// The same state, with `/metrics` served apart (`metrics_listen`).
    pub fn with_metrics_apart(mut self) -> Self {
        self.metrics_apart = true;
        self
    }
}
