//! A proxied call to a git host's smart HTTP (a provider with `kind = "git"`, e.g.
//! `github-git`): `git clone http://x:<keygate token>@<keygate>/proxy/github-git/<owner>/<repo>.git`.
//! The caller's keygate token arrives as a Basic-auth password (`extract::basic_token`);
//! keygate injects the stored GitHub token the way the catalog says (Basic,
//! `x-access-token:<token>`), so the machine running git never holds it.
//!
//! Unlike an API call, nothing here is buffered: the request body (a pack being pushed,
//! or git's gzip-compressed list of wants and haves, passed on unchanged with its
//! `Content-Encoding`) streams to the host as it arrives, and the answer (a pack) streams
//! back as it comes (`relay::answer` recognises `application/x-git-*`), so no memory
//! budget or size limit of the API path applies. The answer is still scrubbed of every
//! form of the injected token; a pack carries one only if the repository itself holds it,
//! and then the pack's checksum fails and git refuses it rather than the token leaving.
//! No tokens are counted: each request is metered as one call.
//!
//! Not for: anything but git's smart-HTTP endpoints (`info/refs?service=…`,
//! `git-upload-pack`, `git-receive-pack`), which are all a git host's provider serves.

use super::request::Incoming;
use super::settle::Finish;
use super::{relay, upstream};
use crate::{ApiError, AppState};
use axum::body::Body;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use keygate_service::gateway::{CallSize, Resolved};
use std::time::Instant;

/// Relays one smart-HTTP request of a resolved call.
pub(crate) async fn call(
    state: &AppState,
    incoming: Incoming,
    body: Body,
    resolved: Resolved,
    started: Instant,
) -> Result<Response, ApiError> {
    if !smart_http(&incoming.method, incoming.path.decoded(), incoming.query.as_deref()) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "{} serves git's smart HTTP only: clone with git clone <keygate>/proxy/{}/<owner>/<repo>.git",
                resolved.provider.name, resolved.provider.id
            ),
        ));
    }
    let announced = incoming
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let admitted = state.services.admit(resolved, CallSize { choices: 1, ..CallSize::default() }).await?;
    let mut finish = Finish::new(state.services.clone(), admitted, None, announced, started);
    let outbound = upstream::Outbound::Stream(body);
    let sent_at = Instant::now();
    finish.sending();
    let sent = match upstream::send(state, &finish.call, &incoming, outbound, started).await {
        Ok(sent) => sent,
        Err(e) => {
            state.metrics.request(&finish.call.provider.id, finish.call.source.as_str(), 0);
            finish.settle(keygate_core::usage::Tokens::default());
            return Err(e);
        }
    };
    state.metrics.upstream_latency(&finish.call.provider.id, sent_at.elapsed());
    relay::answer(state, finish, sent, incoming.dialect, false).await
}

/// Whether a call is one of git's smart-HTTP requests of a repository.
fn smart_http(method: &Method, path: &str, query: Option<&str>) -> bool {
    let Some((repo, endpoint)) = path.trim_start_matches('/').split_once(".git/") else { return false };
    if repo.is_empty() {
        return false;
    }
    let service = |name: &str| query.is_some_and(|q| q.split('&').any(|pair| pair == format!("service={name}")));
    match (method.as_str(), endpoint) {
        ("GET", "info/refs") => service("git-upload-pack") || service("git-receive-pack"),
        ("POST", "git-upload-pack" | "git-receive-pack") => true,
        _ => false,
    }
}

/// keygate's own `401` to a git client challenges for Basic auth, not Bearer: libcurl
/// (under git) sends the credential it holds only for a scheme it is offered. A `401`
/// relayed from the git host keeps the host's own challenge.
pub(crate) fn challenge(reply: &mut Response) {
    let own = reply
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/problem+json"));
    if reply.status() == StatusCode::UNAUTHORIZED && own {
        reply.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"keygate\""));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_smart_http_passes() {
        let (get, post) = (Method::GET, Method::POST);
        assert!(smart_http(&get, "octo/hello.git/info/refs", Some("service=git-upload-pack")));
        assert!(smart_http(&get, "octo/hello.git/info/refs", Some("service=git-receive-pack")));
        assert!(smart_http(&post, "octo/hello.git/git-upload-pack", None));
        assert!(smart_http(&post, "octo/hello.git/git-receive-pack", None));
        assert!(!smart_http(&get, "octo/hello.git/info/refs", None), "dumb HTTP");
        assert!(!smart_http(&get, "octo/hello.git/HEAD", None));
        assert!(!smart_http(&get, "octo/hello.git/objects/info/packs", None));
        assert!(!smart_http(&get, "octo/hello.git/git-upload-pack", None));
        assert!(!smart_http(&post, ".git/git-upload-pack", None));
        assert!(!smart_http(&get, "user", None));
    }
}
