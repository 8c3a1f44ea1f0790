//! HTTP-level tests: the router through `oneshot` against real stores (SQLite and
//! PostgreSQL) and keygate-mock as every provider; and real servers on port 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin_pages;
mod auth;
mod authz;
mod bedrock;
mod change_notify;
mod connections;
mod containment;
mod errors;
mod fallback;
mod github;
mod guard;
mod health;
mod keys;
mod logging;
mod metrics;
mod oidc;
mod openapi;
mod pages;
mod proxy;
mod remove_by_provider;
mod sessions;
mod support;
mod unified;
mod usage_page;
