//! `keygate-mock`: the mock provider as a standalone server for scripts, SDK tests and
//! benchmarks. Reconfigure it at run time with `PUT /__mock/config`; `GET /__mock/stats`
//! counts the provider requests served.

use clap::Parser;
use keygate_mock::{router, AwsCredential, MockConfig, OAuthClient, Shared};
use std::io::Write;

#[derive(Debug, Parser)]
#[command(name = "keygate-mock", about = "A mock AI/API provider on loopback, for keygate's tests and benchmarks")]
struct Args {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:9999")]
    listen: std::net::SocketAddr,
    /// An API key to accept (repeatable).
    #[arg(long = "valid-key")]
    valid_keys: Vec<String>,
    /// An OAuth2 client to accept, as `client_id:client_secret` (repeatable).
    #[arg(long = "oauth-client")]
    oauth_clients: Vec<String>,
    /// An OpenID Connect client the issuer at `/oidc` accepts, as `client_id:client_secret`
    /// (repeatable). Who signs in: `POST /__oidc/next-user`; knobs: `PUT /__oidc/behaviour`.
    #[arg(long = "oidc-client")]
    oidc_clients: Vec<String>,
    /// An AWS credential whose SigV4 signatures Bedrock accepts, as
    /// `access_key_id:secret_access_key` (repeatable).
    #[arg(long = "aws-credential")]
    aws_credentials: Vec<String>,
    /// Delay before every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Delay between streamed chunks, in milliseconds.
    #[arg(long, default_value_t = 0)]
    chunk_interval_ms: u64,
    /// Content chunks per streamed answer.
    #[arg(long, default_value_t = 5)]
    chunks: u32,
    #[arg(long, default_value_t = 11)]
    input_tokens: u64,
    #[arg(long, default_value_t = 7)]
    output_tokens: u64,
    /// Do not record requests (for benchmarks).
    #[arg(long)]
    no_record: bool,
    /// Serve git's smart HTTP from the bare repositories (`<owner>/<repo>.git`) under this
    /// directory, to requests authenticated as `x-access-token:<a valid key>`.
    #[arg(long)]
    git_root: Option<String>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if !args.listen.ip().is_loopback() {
        let _ = writeln!(std::io::stderr(), "keygate-mock listens on loopback only; got {}", args.listen);
        return std::process::ExitCode::FAILURE;
    }
    let mut oauth_clients = Vec::new();
    for spec in &args.oauth_clients {
        let Some((client_id, client_secret)) = spec.split_once(':') else {
            let _ = writeln!(std::io::stderr(), "--oauth-client must be client_id:client_secret");
            return std::process::ExitCode::FAILURE;
        };
        oauth_clients.push(OAuthClient { client_id: client_id.into(), client_secret: client_secret.into() });
    }
    let mut oidc_clients = Vec::new();
    for spec in &args.oidc_clients {
        let Some((client_id, client_secret)) = spec.split_once(':') else {
            let _ = writeln!(std::io::stderr(), "--oidc-client must be client_id:client_secret");
            return std::process::ExitCode::FAILURE;
        };
        oidc_clients.push(OAuthClient { client_id: client_id.into(), client_secret: client_secret.into() });
    }
    let mut aws_credentials = Vec::new();
    for spec in &args.aws_credentials {
        let Some((access_key_id, secret_access_key)) = spec.split_once(':') else {
            let _ = writeln!(std::io::stderr(), "--aws-credential must be access_key_id:secret_access_key");
            return std::process::ExitCode::FAILURE;
        };
        aws_credentials
            .push(AwsCredential { access_key_id: access_key_id.into(), secret_access_key: secret_access_key.into() });
    }
    let config = MockConfig {
        valid_keys: args.valid_keys,
        oauth_clients,
        oidc_clients,
        aws_credentials,
        latency_ms: args.latency_ms,
        chunk_interval_ms: args.chunk_interval_ms,
        chunks: args.chunks,
        input_tokens: args.input_tokens,
        output_tokens: args.output_tokens,
        record: !args.no_record,
        git_root: args.git_root,
        ..MockConfig::default()
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "keygate-mock: cannot listen on {}: {e}", args.listen);
            return std::process::ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let _ = writeln!(std::io::stdout(), "keygate-mock listening on http://{addr}");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match keygate_mock::serve(listener, router(Shared::new(config)), shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "keygate-mock: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
