//! HTTP-level tests: the router through `oneshot`, and real servers on port 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod health;
mod logging;
mod support;
