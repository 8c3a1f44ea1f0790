//! keygate's use cases, between the HTTP/CLI edges and the store and vault:
//!
//! - [`keys::KeyVault`]: data-key lifecycle (create, unwrap with a short cache,
//!   crypto-shred) and sealing/opening credentials bound to their rows;
//! - [`boot`]: the start-up check (canary sealed at first start, wrong master key fails fast);
//! - [`rotation`]: online, resumable master-key rotation;
//! - [`doctor`]: the deep health check behind `keygate doctor`;
//! - [`accounts`]: admin accounts with argon2id passwords;
//! - [`audit`]: recording who did what;
//! - [`throttle`]: a cap on password attempts per account and per source address.
//!
//! Not for: HTTP, SQL, or configuration parsing. Edges call in here; this crate calls the
//! [`keygate_store::Store`] trait and [`keygate_vault`].

pub mod accounts;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod aws;
pub mod boot;
pub mod cache;
pub mod credentials;
pub mod doctor;
mod error;
pub mod gateway;
pub mod guard;
pub mod jwt;
pub mod keys;
pub mod limits;
pub mod oidc;
pub mod outbound;
pub mod principal;
pub mod rotation;
pub mod sandbox;
pub mod services;
pub mod sessions;
pub mod setup;
pub mod throttle;
pub mod usage;
pub mod validation;

pub use error::{ServiceError, ServiceResult};
pub use principal::{Principal, SandboxSession, Via};
pub use services::{Options, Services};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

/// The current time at the microsecond precision both backends store exactly.
pub fn now() -> DateTime<Utc> {
    let t = Utc::now();
    t.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(t)
}
