//! The SQL both backends share, one file per concern. SQLite and PostgreSQL agree on
//! everything keygate needs (numbered `$n` parameters, `ON CONFLICT`, partial unique
//! indexes), so each statement is written once, as ordinary Rust inside `db_run!`, which
//! compiles it for both backends and runs the one a pool belongs to. What differs stays
//! elsewhere: connections and pragmas in `sqlite.rs` / `postgres.rs`, timestamp storage
//! in [`crate::ts`], schemas in `migrations/<backend>`.
//!
//! Not for: rules. These statements save and load what they are given.

mod audit;
mod changes;
mod credentials;
mod data_keys;
mod identities;
mod meta;
mod principals;
mod sessions;
mod store;
mod usage;

pub(crate) use store::SqlStore;

use crate::{StoreError, StoreResult};
use sqlx::{PgConnection, PgPool, SqliteConnection, SqlitePool};

/// One value per backend: a pool, a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PerBackend<S, P> {
    Sqlite(S),
    Postgres(P),
}

/// A store's connection pool.
pub(crate) type Pool<'a> = PerBackend<&'a SqlitePool, &'a PgPool>;

/// One connection, on its own or inside a transaction: for statements that run both ways.
pub(crate) type Conn<'c> = PerBackend<&'c mut SqliteConnection, &'c mut PgConnection>;

impl<'c> From<&'c mut SqliteConnection> for Conn<'c> {
    fn from(conn: &'c mut SqliteConnection) -> Self {
        Self::Sqlite(conn)
    }
}

impl<'c> From<&'c mut PgConnection> for Conn<'c> {
    fn from(conn: &'c mut PgConnection) -> Self {
        Self::Postgres(conn)
    }
}

/// `db_run!(pool_or_conn, |x| { body })` runs `body` with `x` bound to the concrete
/// SQLite or PostgreSQL pool (or connection) inside. The body is not a closure: it is
/// pasted into one match arm per backend and compiled for each, so `?` and `return`
/// leave the enclosing function. Written as a call with an expression argument, it
/// stays ordinary Rust that rustfmt formats.
macro_rules! db_run {
    ($on:expr, |$x:ident| $body:block) => {
        match $on {
            $crate::sql::PerBackend::Sqlite($x) => $body,
            $crate::sql::PerBackend::Postgres($x) => $body,
        }
    };
}
use db_run;

/// Usage events per INSERT statement (15 parameters each: well under both backends' limits).
const USAGE_ROWS_PER_INSERT: usize = 128;

/// `Ok` if a statement touched a row; [`StoreError::NotFound`] naming `entity` otherwise.
fn expect_one(rows: u64, entity: &'static str, id: impl ToString) -> StoreResult<()> {
    if rows == 0 {
        Err(StoreError::not_found(entity, id))
    } else {
        Ok(())
    }
}
