//! What every handler can reach. Cheap to clone: everything inside is shared.

use crate::metrics::Metrics;
use keygate_service::Services;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct AppState {
    pub services: Arc<Services>,
    pub metrics: Arc<Metrics>,
}

impl AppState {
    pub fn new(services: Arc<Services>) -> Self {
        Self { services, metrics: Arc::new(Metrics::default()) }
    }
}
