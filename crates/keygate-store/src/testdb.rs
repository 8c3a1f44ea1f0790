//! Fresh databases for tests: a temporary SQLite file, or a uniquely named PostgreSQL
//! database created for one test and dropped after it.
//!
//! PostgreSQL is found at `KEYGATE_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). When it cannot be reached, a local run
//! prints a clear skip message and the test returns early; with `CI=true` that is a
//! failure, never a silent pass.
//!
//! Not for production: compiled only with the `testdb` feature, which test suites
//! (`[dev-dependencies]`) and the benchmark harness turn on.

use crate::{redact_url, DatabaseLocation};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use std::path::PathBuf;

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDb {
    pub location: DatabaseLocation,
    /// The SQLite temp dir, or a data dir for whatever else the test writes.
    pub dir: tempfile::TempDir,
    postgres: Option<(String, String)>,
}

impl TestDb {
    /// A SQLite file in a new temporary directory.
    pub fn sqlite() -> Self {
        let dir = tempdir();
        Self { location: DatabaseLocation::in_data_dir(dir.path()), dir, postgres: None }
    }

    /// A new, empty, uniquely named PostgreSQL database; `None` (after saying why) when
    /// the server is unreachable outside CI.
    pub async fn postgres() -> Option<Self> {
        let admin_url = std::env::var("KEYGATE_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
        let name = format!("keygate_t_{}", uuid::Uuid::now_v7().simple());
        match create_database(&admin_url, &name).await {
            Ok(url) => Some(Self {
                location: DatabaseLocation::Postgres(url),
                dir: tempdir(),
                postgres: Some((admin_url, name)),
            }),
            Err(err) => {
                let message = format!(
                    "PostgreSQL at {} is not reachable ({err}); start it with \
                     `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`",
                    redact_url(&admin_url)
                );
                if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                    panic!("CI requires PostgreSQL: {message}");
                }
                skip_notice(&message);
                None
            }
        }
    }

    /// The database URL to hand to keygate (`KEYGATE_DATABASE_URL`).
    pub fn url(&self) -> String {
        match &self.location {
            DatabaseLocation::Sqlite(path) => format!("sqlite://{}", path.display()),
            DatabaseLocation::Postgres(url) => url.clone(),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

#[allow(clippy::print_stderr)]
fn skip_notice(message: &str) {
    eprintln!("SKIPPED (PostgreSQL test): {message}");
}

#[allow(clippy::expect_used)]
fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("keygate-test-").tempdir().expect("a temporary directory for the test database")
}

async fn create_database(admin_url: &str, name: &str) -> Result<String, sqlx::Error> {
    let options: PgConnectOptions = admin_url.parse()?;
    let mut conn = options.clone().connect().await?;
    // `name` is generated above from a UUID: only [a-z0-9_].
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await?;
    conn.close().await?;
    let base = admin_url.split('?').next().unwrap_or(admin_url);
    let base = base.rsplit_once('/').map(|(b, _)| b).unwrap_or(base);
    Ok(format!("{base}/{name}"))
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs outside any async context we can rely on: use a thread of our own.
        let dropper = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                let Ok(options) = admin_url.parse::<PgConnectOptions>() else {
                    return;
                };
                if let Ok(mut conn) = options.connect().await {
                    let _ =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await;
                    let _ = conn.close().await;
                }
            });
        });
        let _ = dropper.join();
    }
}

/// Runs an async test body against SQLite and PostgreSQL: `both_backends!(name);` makes
/// `name::sqlite` and `name::postgres` from `async fn name(db: TestDb)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::testdb::TestDb::sqlite()).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(db) = $crate::testdb::TestDb::postgres().await {
                        super::$name(db).await
                    }
                }
            }
        )+
    };
}
