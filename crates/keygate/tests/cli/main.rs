//! End-to-end tests of the `keygate` binary: each runs the real executable against a
//! fresh data directory (and, where marked, a fresh PostgreSQL database).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod api_flow;
mod durability;
mod keys;
mod replicas;
mod serve;
mod support;
