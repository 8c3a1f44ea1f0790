//! keygate's domain: the types every other crate speaks (workspaces, users, credentials,
//! data keys, tokens, audit and usage events) and the rules that need no I/O.
//!
//! Not for: storage, cryptography, HTTP. This crate never touches a database, a socket
//! or a key; it is what the store saves and what the services reason about.

pub mod catalog;
pub mod endpoints;
pub mod eventstream;
pub mod fastmap;
pub mod guard;
pub mod ids;
pub mod model;
pub mod policy;
pub mod proxypath;
pub mod resolution;
pub mod translate;
pub mod usage;

pub use ids::*;
pub use model::*;
