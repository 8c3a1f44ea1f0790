//! Finding the master key(s). Exactly one source may be configured:
//! `KEYGATE_MASTER_KEYS`, `KEYGATE_MASTER_KEY` or `master_key_file`. With none, the
//! embedded default uses `<data_dir>/master.key`, generating it (mode 0600) on first
//! start with a loud warning; in production that is an error that says how to make one.

use crate::config::{Config, Mode};
use keygate_vault::{Kek, Keyring, KeyringError};
use secrecy::ExposeSecret;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const DEV_KEY_FILE: &str = "master.key";

/// Why no keyring could be built. Each has a stable code for messages and tests.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error(
        "no master key is configured and KEYGATE_ENV=production: generate one with `keygate keygen`, \
         then set KEYGATE_MASTER_KEY (or KEYGATE_MASTER_KEYS, or KEYGATE_MASTER_KEY_FILE) and keep it apart \
         from database backups"
    )]
    Missing,
    #[error(
        "no master key is configured and KEYGATE_ENV=production: the development key file {0} is never used \
         in production. If it is this deployment's key, configure it explicitly with \
         KEYGATE_MASTER_KEY_FILE={0} (and keep it apart from database backups); otherwise generate one with \
         `keygate keygen` and set KEYGATE_MASTER_KEY"
    )]
    DevKeyInProduction(PathBuf),
    #[error("{0}")]
    Malformed(#[from] KeyringError),
    #[error("master keys are set in more than one place ({0}): set exactly one")]
    Ambiguous(String),
    #[error("reading the master key file {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
}

impl MasterKeyError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing | Self::DevKeyInProduction(_) => "master_key_missing",
            Self::Malformed(_) => "master_key_malformed",
            Self::Ambiguous(_) => "master_key_ambiguous",
            Self::Unreadable { .. } => "master_key_unreadable",
        }
    }
}

/// Where the keyring came from, for logs and `doctor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Env(&'static str),
    File(PathBuf),
    DevFile(PathBuf),
    Generated(PathBuf),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Env(name) => write!(f, "{name}"),
            Origin::File(path) => write!(f, "key file {}", path.display()),
            Origin::DevFile(path) => write!(f, "development key file {}", path.display()),
            Origin::Generated(path) => {
                write!(f, "newly generated development key file {}", path.display())
            }
        }
    }
}

/// What to do when no key is configured and no development key file exists yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfAbsent {
    /// Generate the development key (serving, admin commands).
    Generate,
    /// Report that there is none (doctor: it changes nothing).
    Report,
}

/// Builds the keyring from the configuration; `Ok(None)` only with [`IfAbsent::Report`].
pub fn load(config: &Config, if_absent: IfAbsent) -> Result<Option<(Keyring, Origin)>, MasterKeyError> {
    let mut configured = Vec::new();
    if config.master_keys.is_some() {
        configured.push("KEYGATE_MASTER_KEYS");
    }
    if config.master_key.is_some() {
        configured.push("KEYGATE_MASTER_KEY");
    }
    if config.master_key_file.is_some() {
        configured.push("master_key_file / KEYGATE_MASTER_KEY_FILE");
    }
    if configured.len() > 1 {
        return Err(MasterKeyError::Ambiguous(configured.join(", ")));
    }
    let dev_file = config.data_dir.value.join(DEV_KEY_FILE);
    let production = config.env.value == Mode::Production;
    if production && !configured.is_empty() && dev_file.exists() {
        tracing::warn!(
            path = %dev_file.display(),
            source = configured[0],
            "production mode ignores the development key file in the data directory; the master key comes from the configured source only"
        );
    }
    if let Some(list) = &config.master_keys {
        let ring = Keyring::from_list("KEYGATE_MASTER_KEYS", list.value.expose_secret())?;
        return Ok(Some((ring, Origin::Env("KEYGATE_MASTER_KEYS"))));
    }
    if let Some(key) = &config.master_key {
        let ring = Keyring::from_hex("KEYGATE_MASTER_KEY", key.value.expose_secret())?;
        return Ok(Some((ring, Origin::Env("KEYGATE_MASTER_KEY"))));
    }
    if let Some(file) = &config.master_key_file {
        return Ok(Some((read_key_file(&file.value)?, Origin::File(file.value.clone()))));
    }

    // Production takes its key only from a configured source, never from a file that a
    // development run left in the data directory.
    if production {
        return Err(if dev_file.exists() {
            MasterKeyError::DevKeyInProduction(dev_file)
        } else {
            MasterKeyError::Missing
        });
    }
    if dev_file.exists() {
        return Ok(Some((read_key_file(&dev_file)?, Origin::DevFile(dev_file))));
    }
    match if_absent {
        IfAbsent::Report => Ok(None),
        IfAbsent::Generate => {
            let kek = generate_dev_key(&dev_file)?;
            Ok(Some((Keyring::new(vec![kek])?, Origin::Generated(dev_file))))
        }
    }
}

fn read_key_file(path: &Path) -> Result<Keyring, MasterKeyError> {
    let unreadable = |reason: String| MasterKeyError::Unreadable { path: path.to_path_buf(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
    warn_if_readable_by_others(path);
    Ok(Keyring::from_file_contents(&format!("master key file {}", path.display()), &text)?)
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "the master key file is readable by other users: chmod 600 it");
            }
        }
    }
}

/// Creates `dir` (and its parents) with mode 0700 if it does not exist.
pub fn ensure_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Writes a new key to `path` with mode 0600; never overwrites an existing file.
fn generate_dev_key(path: &Path) -> Result<Kek, MasterKeyError> {
    let unwritable = |e: std::io::Error| MasterKeyError::Unreadable {
        path: path.to_path_buf(),
        reason: format!("cannot create it: {e}"),
    };
    if let Some(dir) = path.parent() {
        ensure_private_dir(dir).map_err(unwritable)?;
    }
    let kek = Kek::generate("dev");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(unwritable)?;
    let contents = format!(
        "# keygate development master key, generated {}.\n\
         # Keep this file apart from database backups: together they open every stored key;\n\
         # without it, no stored key can be opened. For production, set KEYGATE_MASTER_KEY.\n\
         dev:{}\n",
        chrono_like_now(),
        kek.to_hex().as_str()
    );
    file.write_all(contents.as_bytes()).and_then(|()| file.sync_all()).map_err(unwritable)?;
    tracing::warn!(
        path = %path.display(),
        "GENERATED A DEVELOPMENT MASTER KEY. Keep this file apart from database backups: anyone with both can read \
         every stored key, and losing it makes every stored key unreadable. In production set KEYGATE_MASTER_KEY \
         (see `keygate keygen`) and KEYGATE_ENV=production."
    );
    Ok(kek)
}

fn chrono_like_now() -> String {
    keygate_service::now().format("%Y-%m-%d %H:%M:%S UTC").to_string()
}
