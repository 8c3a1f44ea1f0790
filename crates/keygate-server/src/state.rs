//! What every handler can reach. Cheap to clone: everything inside is shared.

use keygate_service::Services;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct AppState {
    pub services: Arc<Services>,
}

impl AppState {
    pub fn new(services: Arc<Services>) -> Self {
        Self { services }
    }
}
