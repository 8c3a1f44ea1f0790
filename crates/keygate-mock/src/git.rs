//! A git host's smart HTTP, as GitHub serves it at `https://github.com`, for keygate's
//! `github-git` provider: `GET /<owner>/<repo>.git/info/refs?service=…`,
//! `POST …/git-upload-pack` (clone, fetch) and `POST …/git-receive-pack` (push), answered
//! by `git http-backend` run as a CGI program over the bare repositories under
//! [`MockConfig::git_root`] — only for a request carrying
//! `Authorization: Basic base64("x-access-token:" + <a valid key>)`, the way GitHub takes a
//! token over git. Anything else is `401` with `WWW-Authenticate: Basic realm="GitHub"`.
//!
//! Bodies stream both ways: the request body is piped into the CGI's standard input as it
//! arrives (a `Content-Encoding: gzip` body as it is: http-backend inflates it itself), and
//! its output is relayed as it is written, so packs of any size pass.
//!
//! Not for: anything but tests; the repositories are whatever the test put there.

use crate::config::MockConfig;
use crate::server::{basic_auth, Recorded, Shared};
use axum::body::{Body, Bytes};
use axum::http::request::Parts;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use std::process::Stdio;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The user name GitHub takes with a token over git's smart HTTP.
pub(crate) const TOKEN_USER: &str = "x-access-token";

/// Whether `path` is one of git's smart-HTTP endpoints of a repository.
pub(crate) fn is_git_path(path: &str) -> bool {
    let Some((repo, rest)) = path.split_once(".git/") else { return false };
    repo.len() > 1 && repo.starts_with('/') && matches!(rest, "info/refs" | "git-upload-pack" | "git-receive-pack")
}

/// Answers one smart-HTTP request (see the module's documentation).
pub(crate) async fn answer(shared: &Shared, config: &MockConfig, parts: Parts, body: Body) -> Response {
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let presented = basic_auth(&parts.headers);
    if config.record {
        shared.record(Recorded {
            method: parts.method.to_string(),
            path: path.clone(),
            query: Some(query.clone()).filter(|q| !q.is_empty()),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect(),
            credential: presented.as_ref().map(|(_, token)| token.clone()),
            credential_via: presented.as_ref().map(|(user, _)| format!("basic:{user}")),
            body: String::new(),
        });
    }
    let authorized = presented.is_some_and(|(user, token)| user == TOKEN_USER && config.valid_keys.contains(&token));
    if !authorized {
        let mut reply = (
            StatusCode::UNAUTHORIZED,
            "Invalid username or token. Password authentication is not supported for Git operations.\n",
        )
            .into_response();
        reply.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"GitHub\""));
        return reply;
    }
    let Some(root) = &config.git_root else {
        return (StatusCode::NOT_FOUND, "Repository not found.\n").into_response();
    };
    match cgi(root, &parts, &path, &query, body).await {
        Ok(reply) => reply,
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("git http-backend: {e}\n")).into_response(),
    }
}

/// Runs `git http-backend` for one request and relays its answer as it comes.
async fn cgi(root: &str, parts: &Parts, path: &str, query: &str, body: Body) -> std::io::Result<Response> {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut command = tokio::process::Command::new("git");
    command
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REQUEST_METHOD", parts.method.as_str())
        // A user is what enables git-receive-pack (push) in http-backend.
        .env("REMOTE_USER", TOKEN_USER)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, var) in [
        ("content-type", "CONTENT_TYPE"),
        ("content-length", "CONTENT_LENGTH"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "GIT_PROTOCOL"),
    ] {
        if let Some(value) = header(name) {
            command.env(var, value);
        }
    }
    let mut child = command.spawn()?;
    let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(std::io::Error::other("the CGI's pipes are missing"));
    };
    // Drained all along, so git never blocks on a full pipe; shown only if it fails.
    let errors = tokio::spawn(async move {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text).await;
        String::from_utf8_lossy(&text).into_owned()
    });
    // The request body goes in as it arrives; closing stdin tells http-backend it ended.
    tokio::spawn(async move {
        let mut frames = body.into_data_stream();
        while let Some(Ok(chunk)) = frames.next().await {
            if stdin.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = stdin.shutdown().await;
    });
    // The CGI headers, up to the blank line.
    let mut head = Vec::new();
    let mut buffer = vec![0u8; 64 << 10];
    let split = loop {
        if let Some(end) = header_end(&head) {
            break end;
        }
        let n = stdout.read(&mut buffer).await?;
        if n == 0 {
            let _ = child.wait().await;
            let text = errors.await.unwrap_or_default();
            return Err(std::io::Error::other(format!("no CGI headers: {}", text.trim())));
        }
        head.extend_from_slice(&buffer[..n]);
    };
    let rest = head.split_off(split.1);
    let mut status = StatusCode::OK;
    let mut reply = Response::builder();
    for line in String::from_utf8_lossy(&head[..split.0]).lines() {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split(' ').next().and_then(|c| c.parse::<u16>().ok());
            status = code.and_then(|c| StatusCode::from_u16(c).ok()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        } else if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name.trim().as_bytes()), HeaderValue::from_str(value))
        {
            reply = reply.header(name, value);
        }
    }
    // The rest of the answer streams out as git writes it; the process is reaped after.
    let stream = futures_util::stream::unfold(
        (Some(Bytes::from(rest)), stdout, Some(child), buffer),
        |(first, mut stdout, mut child, mut buffer)| async move {
            if let Some(first) = first.filter(|f| !f.is_empty()) {
                return Some((Ok::<_, std::io::Error>(first), (None, stdout, child, buffer)));
            }
            match stdout.read(&mut buffer).await {
                Ok(0) | Err(_) => {
                    if let Some(mut child) = child.take() {
                        let _ = child.wait().await;
                    }
                    None
                }
                Ok(n) => Some((Ok(Bytes::copy_from_slice(&buffer[..n])), (None, stdout, child, buffer))),
            }
        },
    );
    reply.status(status).body(Body::from_stream(stream)).map_err(std::io::Error::other)
}

/// Where the CGI headers end: (end of the headers, start of the body).
fn header_end(bytes: &[u8]) -> Option<(usize, usize)> {
    let crlf = memfind(bytes, b"\r\n\r\n").map(|at| (at, at + 4));
    let lf = memfind(bytes, b"\n\n").map(|at| (at, at + 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

fn memfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_the_smart_http_endpoints() {
        assert!(is_git_path("/octo/hello.git/info/refs"));
        assert!(is_git_path("/octo/hello.git/git-upload-pack"));
        assert!(is_git_path("/octo/hello.git/git-receive-pack"));
        assert!(!is_git_path("/octo/hello.git/objects/info/packs"));
        assert!(!is_git_path("/v1/chat/completions"));
        assert!(!is_git_path("/.git/info/refs"));
    }

    #[test]
    fn finds_the_end_of_cgi_headers() {
        assert_eq!(header_end(b"Status: 200\r\nA: b\r\n\r\nbody"), Some((17, 21)));
        assert_eq!(header_end(b"A: b\n\nbody"), Some((4, 6)));
        assert_eq!(header_end(b"A: b\r\n"), None);
    }
}
