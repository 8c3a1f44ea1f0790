//! What every handler can reach. Cheap to clone: everything inside is shared.

use crate::metrics::Metrics;
use crate::proxy::Upstreams;
use keygate_service::Services;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct AppState {
    pub services: Arc<Services>,
    pub upstreams: Arc<Upstreams>,
    pub metrics: Arc<Metrics>,
}

impl AppState {
    pub fn new(services: Arc<Services>) -> Self {
        let upstreams = Arc::new(Upstreams::new(&services));
        Self { services, upstreams, metrics: Arc::new(Metrics::default()) }
    }
}
