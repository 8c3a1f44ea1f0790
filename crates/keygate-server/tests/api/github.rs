//! GitHub as a personal integration: the REST API through `/proxy/github`, the token's live
//! check, and git's smart HTTP through `/proxy/github-git` with a real `git` client against
//! keygate-mock's git host (`git http-backend` behind a check of the injected credential),
//! keygate served on a real port. The GitHub token never reaches git, its output, the
//! clone's configuration, a response or a log line.

use crate::support::*;
use axum::body::Body;
use axum::http::{Method, Request};
use base64::Engine;
use keygate_core::Role;
use keygate_store::both_backends;
use keygate_store::testdb::TestDb;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Output;

both_backends!(
    the_rest_api_gets_the_owners_token_and_the_check_quotes_github,
    git_clones_and_pushes_through_keygate_without_ever_holding_the_token,
    git_without_a_good_keygate_token_is_asked_for_one_and_refused,
    a_github_token_serves_only_its_owner,
    a_sandbox_session_clones_with_its_own_token,
);

async fn the_rest_api_gets_the_owners_token_and_the_check_quotes_github(db: TestDb) {
    let h = Harness::new(db).await;
    let alice = h.user("octo@example.com").await;
    let token = h.valid_key("github_pat_11");
    let created = h.post("/api/v1/keys", &alice.token, json!({"provider": "github", "secret": token})).await;
    assert_eq!((created.status, created.json["validity"].as_str()), (201, Some("valid")), "{}", created.text);
    assert_eq!(created.json["validity_detail"], "GitHub accepted the key");
    let probe = h.mock.requests().pop().unwrap();
    assert_eq!((probe.method.as_str(), probe.path.as_str()), ("GET", "/user"));
    assert_eq!(probe.credential.as_deref(), Some(token.as_str()));
    assert_eq!(probe.header("x-github-api-version"), Some("2022-11-28"));
    h.mock.clear_requests();

    let me = h.get("/proxy/github/user", &alice.token).await;
    assert_eq!((me.status, me.json["login"].as_str()), (200, Some("mock-octocat")), "{}", me.text);
    assert_eq!(me.headers["x-keygate-key-source"], "user");
    let seen = h.mock.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].credential.as_deref(), seen[0].credential_via.as_deref()),
        (Some(token.as_str()), Some("authorization"))
    );
    assert_eq!(seen[0].header("accept"), Some("application/vnd.github+json"));
    assert!(seen[0].headers.iter().all(|(_, v)| !v.contains(&alice.token)), "the keygate token stays home");

    // A token GitHub refuses: saved but marked, with GitHub's own words and nothing of it.
    let wrong = h.invalid_key("ghp_");
    let refused = h.post("/api/v1/keys", &alice.token, json!({"provider": "github", "secret": wrong})).await;
    assert_eq!((refused.status, refused.json["validity"].as_str()), (201, Some("invalid")), "{}", refused.text);
    let detail = refused.json["validity_detail"].as_str().unwrap();
    assert!(detail.starts_with("GitHub rejected the key (HTTP 401: Bad credentials)"), "{detail}");
    assert!(detail.contains("https://github.com/settings/personal-access-tokens/new"), "{detail}");

    // Not a GitHub token at all: refused before anything is sent.
    h.mock.clear_requests();
    let shape = h
        .post(
            "/api/v1/keys",
            &alice.token,
            json!({"provider": "github", "secret": "gho_abcdefghijklmnopqrstuvwxyz0123456789"}),
        )
        .await;
    assert_eq!((shape.status, shape.code()), (422, "invalid_key_format"), "{}", shape.text);
    assert!(shape.json["detail"].as_str().unwrap().contains("`github_pat_` or `ghp_`"));
    assert!(h.mock.requests().is_empty());

    // github-git holds no keys of its own: the one GitHub key serves it.
    let alias =
        h.post("/api/v1/keys", &alice.token, json!({"provider": "github-git", "secret": h.valid_key("ghp_")})).await;
    assert_eq!((alias.status, alias.code()), (422, "invalid_request"), "{}", alias.text);
    assert!(alias.json["detail"].as_str().unwrap().contains("store it once with provider `github`"), "{}", alias.text);
    let providers = h.get("/api/v1/providers", &alice.token).await;
    let git = providers.json["providers"].as_array().unwrap().iter().find(|p| p["id"] == "github-git").unwrap();
    assert_eq!((git["uses_key_of"].as_str(), git["kind"].as_str()), (Some("github"), Some("git")));
    assert_eq!(git["configured"], json!(["user"]), "configured through the github key");
}

async fn git_clones_and_pushes_through_keygate_without_ever_holding_the_token(db: TestDb) {
    // The host answers a push once it has the whole pack: more than the harness's usual
    // two seconds on a busy machine (a deployment waits up to 300 s).
    let setup = Setup { upstream_timeout: Some(std::time::Duration::from_secs(120)), ..Setup::default() };
    let h = Harness::with(db, setup).await;
    let tmp = tempfile::tempdir().unwrap();
    let repos = host_repositories(tmp.path()).await;
    h.mock.configure(|c| c.git_root = Some(repos.display().to_string()));
    let alice = h.user("clone@example.com").await;
    let token = h.valid_key("github_pat_11");
    h.add_key(&alice, json!({"provider": "github", "secret": token})).await;
    let server = Server::start(&h).await;
    h.mock.clear_requests();

    // Clone with the keygate token as git's password.
    let url = format!("http://x:{}@{}/proxy/github-git/octo/hello.git", alice.token, server.addr);
    let clone = tmp.path().join("clone");
    let out = git(tmp.path(), &["clone", &url, path(&clone)]).await;
    assert_clean(&out, &token);
    assert!(out.status.success(), "clone failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(clone.join("README.md")).unwrap(), "hello through keygate\n");
    let config = std::fs::read_to_string(clone.join(".git/config")).unwrap();
    assert!(!config.contains(&token), "the GitHub token is not in the clone's configuration");

    // What reached the git host: the token as GitHub takes it over git, from keygate only.
    let seen = h.mock.requests();
    assert!(seen.iter().any(|r| r.path == "/octo/hello.git/git-upload-pack"), "{seen:?}");
    for request in &seen {
        assert_eq!(request.credential.as_deref(), Some(token.as_str()), "{} {}", request.method, request.path);
        assert_eq!(request.credential_via.as_deref(), Some("basic:x-access-token"));
        assert!(request.headers.iter().all(|(_, v)| !v.contains(&alice.token)), "the keygate token stays home");
    }
    // git gzips a long list of wants (the repository has many branches): passed as it is.
    assert!(
        seen.iter().any(|r| r.header("content-encoding") == Some("gzip")),
        "a gzip-encoded request body went through: {seen:?}"
    );

    // Push back a commit carrying a file larger than any buffer keygate keeps for API
    // calls (32 MiB in, 8 MiB out), then clone it again: packs stream both ways.
    let big = noise(36 << 20);
    std::fs::write(clone.join("big.bin"), &big).unwrap();
    std::fs::write(clone.join("NOTES.md"), "pushed through keygate\n").unwrap();
    for args in [&["add", "big.bin", "NOTES.md"][..], &["commit", "-q", "-m", "through keygate"]] {
        let out = git(&clone, args).await;
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = git(&clone, &["push", "origin", "main"]).await;
    assert_clean(&out, &token);
    assert!(out.status.success(), "push failed: {}", String::from_utf8_lossy(&out.stderr));
    let host = git(&repos, &["--git-dir", "octo/hello.git", "show", "main:NOTES.md"]).await;
    assert_eq!(String::from_utf8_lossy(&host.stdout), "pushed through keygate\n", "the push reached the host");
    let again = tmp.path().join("again");
    let out = git(tmp.path(), &["clone", &url, path(&again)]).await;
    assert_clean(&out, &token);
    assert!(out.status.success(), "second clone failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read(again.join("big.bin")).unwrap() == big, "the large file came back whole");

    // Requests metered, no tokens counted, under github-git, on the GitHub key.
    h.flush().await;
    let usage = h.get("/api/v1/usage?group_by=provider", &alice.token).await;
    assert_eq!(usage.status, 200, "{}", usage.text);
    let row = usage.json["rows"].as_array().unwrap().iter().find(|r| r["key"] == "github-git").cloned();
    let row = row.unwrap_or_else(|| panic!("no github-git usage: {}", usage.text));
    assert!(row["requests"].as_i64().unwrap() >= 6, "{row}");
    assert_eq!((row["input_tokens"].as_i64(), row["output_tokens"].as_i64()), (Some(0), Some(0)), "{row}");
    server.stop().await;
}

async fn git_without_a_good_keygate_token_is_asked_for_one_and_refused(db: TestDb) {
    let h = Harness::new(db).await;
    let tmp = tempfile::tempdir().unwrap();
    let repos = host_repositories(tmp.path()).await;
    h.mock.configure(|c| c.git_root = Some(repos.display().to_string()));
    let alice = h.user("refused@example.com").await;
    let token = h.valid_key("github_pat_11");
    let key = h.add_key(&alice, json!({"provider": "github", "secret": token})).await;
    let server = Server::start(&h).await;
    h.mock.clear_requests();

    // No credential: a Basic challenge, so git sends the one it holds.
    let refs = "/proxy/github-git/octo/hello.git/info/refs?service=git-upload-pack";
    let reply = h.call(Method::GET, refs, None, None).await;
    assert_eq!((reply.status, reply.code()), (401, "unauthenticated"), "{}", reply.text);
    assert_eq!(reply.headers["www-authenticate"], "Basic realm=\"keygate\"");
    // Other providers never challenge, nor take Basic auth.
    let reply = h.call(Method::GET, "/proxy/github/user", None, None).await;
    assert_eq!((reply.status, reply.headers["www-authenticate"].to_str().unwrap()), (401, "Bearer"));
    let basic = |user: &str, password: &str| {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
    };
    for (path, credential) in [
        ("/proxy/github/user", basic("x", &alice.token)),
        ("/api/v1/keys", basic("x", &alice.token)),
        // An account's password is never tried, even where Basic auth is taken.
        (refs, basic("refused@example.com", "correct horse battery staple")),
        (refs, basic(&alice.token, "")),
    ] {
        let request = Request::builder().uri(path).header("authorization", credential).body(Body::empty()).unwrap();
        let reply = h.send(request).await;
        assert_eq!((reply.status, reply.code()), (401, "unauthenticated"), "{path}: {}", reply.text);
    }
    let request =
        Request::builder().uri(refs).header("authorization", basic("x", &alice.token)).body(Body::empty()).unwrap();
    let reply = h.send(request).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.headers["content-type"], "application/x-git-upload-pack-advertisement");
    // Only git's smart HTTP goes to the git host.
    let dumb = h.call(Method::GET, "/proxy/github-git/octo/hello.git/HEAD", Some(&alice.token), None).await;
    assert_eq!((dumb.status, dumb.code()), (404, "not_found"), "{}", dumb.text);
    assert_eq!(h.mock.requests().len(), 1, "only the one good request reached the host");

    // A real git with a wrong token fails, having sent nothing upstream.
    h.mock.clear_requests();
    let wrong = format!("http://x:kg_0123456789abcdef_wrong@{}/proxy/github-git/octo/hello.git", server.addr);
    let out = git(tmp.path(), &["clone", &wrong, path(&tmp.path().join("nope"))]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Authentication failed"), "{stderr}");
    assert!(h.mock.requests().is_empty(), "nothing reached the git host");

    // GitHub stops taking the token: git fails with GitHub's own challenge, and keygate,
    // having checked the token as `github` (`GET /user`), marks the key invalid.
    h.mock.configure(|c| c.valid_keys.retain(|k| *k != token));
    let url = format!("http://x:{}@{}/proxy/github-git/octo/hello.git", alice.token, server.addr);
    let out = git(tmp.path(), &["clone", &url, path(&tmp.path().join("revoked"))]).await;
    assert!(!out.status.success());
    assert_clean(&out, &token);
    let seen = h.mock.requests();
    assert!(seen.iter().any(|r| r.path == "/user"), "re-checked through the REST API: {seen:?}");
    let stored = h.get(&format!("/api/v1/keys/{key}"), &alice.token).await;
    assert_eq!(stored.json["validity"], "invalid", "{}", stored.text);
    assert!(stored.json["validity_detail"].as_str().unwrap().starts_with("GitHub rejected the key (HTTP 401)"));
    server.stop().await;
}

async fn a_github_token_serves_only_its_owner(db: TestDb) {
    let h = Harness::new(db).await;
    let tmp = tempfile::tempdir().unwrap();
    let repos = host_repositories(tmp.path()).await;
    h.mock.configure(|c| c.git_root = Some(repos.display().to_string()));
    let bob = h.user("bob@example.com").await;
    let carol = h.join(&h.user("carol@example.com").await, bob.workspace, Role::Member).await;
    let root = h.super_admin("root@example.com").await;

    // A workspace may hold a GitHub token (say, a bot's), but it serves no call: GitHub has
    // no shared endpoints, so it is usable by nobody, its workspace's owner included.
    let shared = json!({"provider": "github", "scope": "workspace", "secret": h.valid_key("github_pat_11")});
    h.add_key(&bob, shared).await;
    let server = Server::start(&h).await;
    h.mock.clear_requests();
    for caller in [&bob, &carol] {
        let reply = h.get("/proxy/github/user", &caller.token).await;
        assert_eq!((reply.status, reply.code()), (403, "endpoint_not_allowed"), "{}", reply.text);
        let url = format!("http://x:{}@{}/proxy/github-git/octo/hello.git", caller.token, server.addr);
        let out = git(tmp.path(), &["clone", &url, path(&tmp.path().join("stolen"))]).await;
        assert!(!out.status.success(), "a workspace's GitHub token clones nothing");
        assert!(String::from_utf8_lossy(&out.stderr).contains("403"), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(h.mock.requests().is_empty(), "nothing reached GitHub");

    // Never an operator key: it would act as the operator for every user.
    let operator = json!({"provider": "github", "scope": "operator", "secret": h.valid_key("github_pat_11")});
    let reply = h.post("/api/v1/keys", &root.token, operator).await;
    assert_eq!((reply.status, reply.code()), (422, "invalid_request"), "{}", reply.text);
    assert!(reply.json["detail"].as_str().unwrap().contains("cannot be operator keys"), "{}", reply.text);

    // Carol's own token serves her, and only her.
    let mine = h.valid_key("ghp_");
    h.add_key(&carol, json!({"provider": "github", "secret": mine})).await;
    h.mock.clear_requests();
    let reply = h.get("/proxy/github/user", &carol.token).await;
    assert_eq!((reply.status, reply.headers["x-keygate-key-source"].to_str().unwrap()), (200, "user"));
    assert_eq!(h.mock.requests()[0].credential.as_deref(), Some(mine.as_str()));
    let reply = h.get("/proxy/github/user", &bob.token).await;
    assert_eq!(reply.status, 403, "{}", reply.text);
    server.stop().await;
}

async fn a_sandbox_session_clones_with_its_own_token(db: TestDb) {
    let h = Harness::new(db).await;
    let tmp = tempfile::tempdir().unwrap();
    let repos = host_repositories(tmp.path()).await;
    h.mock.configure(|c| c.git_root = Some(repos.display().to_string()));
    let alice = h.user("sandbox@example.com").await;
    let token = h.valid_key("github_pat_11");
    h.add_key(&alice, json!({"provider": "github", "secret": token})).await;
    let server = Server::start(&h).await;
    let (h, alice) = (&h, &alice);
    let session = |providers: serde_json::Value| async move {
        let body = json!({"name": "workroom", "providers": providers, "ttl_seconds": 600});
        let reply = h.post("/api/v1/sessions", &alice.token, body).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        let token = reply.json["token"].as_str().unwrap().to_owned();
        h.canary(&token);
        token
    };

    // A session naming `github` clones through `github-git` with the same stored token.
    let sandbox = session(json!(["github"])).await;
    let url = format!("http://x:{sandbox}@{}/proxy/github-git/octo/hello.git", server.addr);
    let out = git(tmp.path(), &["clone", &url, path(&tmp.path().join("work"))]).await;
    assert_clean(&out, &token);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(tmp.path().join("work/README.md").exists());
    assert!(h.mock.requests().iter().all(|r| r.credential.as_deref() != Some(sandbox.as_str())));

    // One naming other providers clones nothing.
    h.mock.clear_requests();
    let other = session(json!(["openai"])).await;
    let url = format!("http://x:{other}@{}/proxy/github-git/octo/hello.git", server.addr);
    let out = git(tmp.path(), &["clone", &url, path(&tmp.path().join("denied"))]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(h.mock.requests().is_empty(), "nothing reached the git host");
    server.stop().await;
}

/// `<tmp>/repos/octo/hello.git`: a bare repository with a README on `main` and forty
/// more branches (so a clone's list of wants is long enough for git to gzip it).
async fn host_repositories(tmp: &Path) -> PathBuf {
    let repos = tmp.join("repos");
    let bare = repos.join("octo/hello.git");
    let seed = tmp.join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    std::fs::write(seed.join("README.md"), "hello through keygate\n").unwrap();
    let run = |dir: PathBuf, args: Vec<String>| async move {
        let out = git(&dir, &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let args = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    run(tmp.to_path_buf(), args(&["init", "-q", "--bare", "-b", "main", path(&bare)])).await;
    run(seed.clone(), args(&["init", "-q", "-b", "main"])).await;
    run(seed.clone(), args(&["add", "README.md"])).await;
    run(seed.clone(), args(&["commit", "-q", "-m", "hello"])).await;
    for i in 0..40 {
        run(seed.clone(), vec!["branch".into(), format!("topic-{i:02}")]).await;
    }
    run(seed.clone(), args(&["push", "-q", path(&bare), "--all"])).await;
    repos
}

/// Runs git in `dir` as a sandbox would: no terminal prompt, no credential helper, no
/// system or user configuration.
async fn git(dir: &Path, args: &[&str]) -> Output {
    let home = dir.join(".home");
    std::fs::create_dir_all(&home).unwrap();
    tokio::process::Command::new("git")
        .args(["-c", "credential.helper=", "-c", "protocol.version=2", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .await
        .unwrap()
}

/// git printed no form of the GitHub token.
fn assert_clean(out: &Output, token: &str) {
    let forms = keygate_vault::echo::EchoScrubber::new(&[token]).unwrap();
    for (name, stream) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(!forms.found_in(stream), "git's {name} carried the GitHub token");
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `len` bytes that do not compress (xorshift), so the pack is as large as the file.
fn noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}
