//! The command line: `keygate <command>`. Names are fixed by DESIGN.md section 7.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "keygate",
    version,
    about = "A self-hosted bring-your-own-key vault and gateway for AI and other API providers"
)]
pub struct Cli {
    /// TOML configuration file (overrides KEYGATE_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (overrides KEYGATE_DATA_DIR).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server until SIGTERM or Ctrl-C.
    Serve {
        /// Address to listen on (overrides KEYGATE_LISTEN).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Print a new random master key (64 hex characters).
    Keygen {
        /// Print it as `LABEL:hex`, ready for KEYGATE_MASTER_KEYS.
        #[arg(long)]
        label: Option<String>,
    },
    /// Check configuration, database, master key and every stored credential.
    Doctor,
    /// Master-key operations.
    MasterKey {
        #[command(subcommand)]
        command: MasterKeyCommand,
    },
    /// Administrator accounts.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// keygate API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Print the OpenAPI document of the HTTP API.
    Openapi,
    /// Show configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum MasterKeyCommand {
    /// Rewrap every data key under the primary master key (the first of KEYGATE_MASTER_KEYS).
    Rotate,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a super-admin; the password is read from standard input.
    Create {
        #[arg(long)]
        email: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token for a user; it is printed alone on the last line, this once.
    Create {
        /// The user's email.
        #[arg(long)]
        user: String,
        /// A name to recognise the token by.
        #[arg(long)]
        name: String,
        /// Comma-separated scopes (keys, proxy, usage, admin, metrics); default: all the user
        /// may hold (admin and metrics for super-admins only).
        #[arg(long, value_delimiter = ',')]
        scopes: Option<Vec<String>>,
        /// Expire after this many days.
        #[arg(long)]
        expires_days: Option<u32>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the example configuration, documenting every option.
    Example,
    /// Print the effective configuration and where each value came from (secrets hidden).
    Show,
}
