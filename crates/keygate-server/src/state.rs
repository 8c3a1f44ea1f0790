//! What every handler can reach. Cheap to clone: everything inside is shared.

use crate::metrics::Metrics;
use crate::proxy::BodyBudget;
use keygate_service::Services;
use std::sync::Arc;

/// Memory all buffered proxied request bodies may hold at once, by default.
pub const DEFAULT_BODY_BUDGET: usize = 256 << 20;

#[derive(Debug, Clone)]
pub struct AppState {
    pub services: Arc<Services>,
    pub metrics: Arc<Metrics>,
    /// Bounds the memory buffered request bodies hold (over it: 503 `overloaded`).
    pub body_budget: BodyBudget,
    /// `/metrics` is served on a listener of its own ([`crate::metrics_router`]), so
    /// [`crate::router`] does not route it at all.
    pub metrics_apart: bool,
    /// Options for the web pages (cookies `Secure` behind TLS).
    pub pages: crate::pages::PagesOptions,
    /// The proxy's outbound client (keygate's own HTTP/1 pool for plain-HTTP origins,
    /// hyper-util's for HTTPS; `proxy::client`).
    pub(crate) proxy_client: Arc<crate::proxy::client::ProxyClient>,
}

impl AppState {
    pub fn new(services: Arc<Services>) -> Self {
        let (connect, read) = services.upstreams().proxy_timeouts();
        let proxy_client = Arc::new(crate::proxy::client::ProxyClient::new(
            services.catalog(),
            connect,
            read.unwrap_or(std::time::Duration::from_secs(300)),
        ));
        Self {
            proxy_client,
            services,
            metrics: Arc::new(Metrics::default()),
            body_budget: BodyBudget::new(DEFAULT_BODY_BUDGET),
            metrics_apart: false,
            pages: crate::pages::PagesOptions::default(),
        }
    }

    /// With another budget for buffered request bodies, in bytes.
    pub fn with_body_budget(mut self, bytes: usize) -> Self {
        self.body_budget = BodyBudget::new(bytes);
        self
    }

    /// The same state, for a deployment reached over TLS: session cookies get `Secure`.
    pub fn behind_tls(mut self, behind_tls: bool) -> Self {
        self.pages.behind_tls = behind_tls;
        self
    }

    /// The same state, with `/metrics` served apart (`metrics_listen`).
    pub fn with_metrics_apart(mut self) -> Self {
        self.metrics_apart = true;
        self
    }
}
