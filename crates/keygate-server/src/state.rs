//! What every handler can reach. Cheap to clone: everything inside is shared.

use keygate_service::keys::KeyVault;
use keygate_store::Store;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub vault: Arc<KeyVault>,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, vault: Arc<KeyVault>) -> Self {
        Self { store, vault }
    }
}
