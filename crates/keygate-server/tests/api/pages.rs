//! The web pages over HTTP, as a browser without JavaScript uses them: cookies, forms
//! with their CSRF field, redirects. (The same pages in a real Chromium, with axe and
//! screenshots, are in tests/browser/.)

use crate::support::*;
use axum::body::Body;
use axum::http::{Method, Request};
use keygate_store::both_backends;
use keygate_store::testdb::TestDb;
use std::collections::BTreeMap;

both_backends!(
    a_fresh_deployment_is_claimed_once_with_the_setup_code_and_the_wizard_locks,
    pages_are_sent_with_strict_security_headers_and_session_cookies,
    every_form_post_needs_its_csrf_field,
    a_person_manages_their_keys_on_the_page_without_any_secret_coming_back,
    a_key_of_another_providers_shape_is_caught_before_anything_is_sent,
    signing_out_ends_the_session_at_once,
    a_host_sign_in_link_works_once_and_leaves_no_token_in_the_address,
    a_next_with_dot_segments_never_leads_to_someone_elses_sign_in_link,
    a_host_user_signed_in_before_the_owner_does_not_lock_the_wizard,
    a_page_without_its_cookie_keeps_the_session_and_errors_carry_the_headers,
    the_demo_banner_shows_what_is_left_and_turns_off_with_an_own_key,
    a_workspace_member_sees_shared_keys_but_cannot_change_them,
    tokens_are_created_shown_once_and_revoked_on_the_page,
);

/// A browser without JavaScript: keeps cookies, follows nothing by itself.
pub struct Browser<'h> {
    h: &'h Harness,
    cookies: BTreeMap<String, String>,
    pub forwarded_https: bool,
}

pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub html: String,
    pub headers: axum::http::HeaderMap,
}

impl Page {
    /// The first `csrf_token` hidden field on the page.
    pub fn csrf(&self) -> String {
        let marker = "name=\"csrf_token\" value=\"";
        let at = self.html.find(marker).unwrap_or_else(|| panic!("no csrf_token on the page: {}", self.html));
        let rest = &self.html[at + marker.len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }
}

impl<'h> Browser<'h> {
    pub fn new(h: &'h Harness) -> Self {
        Self { h, cookies: BTreeMap::new(), forwarded_https: false }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let request = self.request(Method::GET, path).body(Body::empty()).unwrap();
        self.send(request).await
    }

    /// Posts `fields` as a form (the CSRF field is not added: callers pass it).
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body = serde_urlencoded::to_string(fields).unwrap();
        let request = self
            .request(Method::POST, path)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        self.send(request).await
    }

    /// Loads `page_path`, then posts `fields` with the page's CSRF value.
    pub async fn submit(&mut self, page_path: &str, action: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.get(page_path).await.csrf();
        let mut all = vec![("csrf_token", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post(action, &all).await
    }

    /// Signs in through the sign-in form.
    pub async fn sign_in(&mut self, email: &str, password: &str) -> Page {
        self.submit("/login", "/login", &[("email", email), ("password", password)]).await
    }

    /// Presents `value` as the cookie `name` from now on (what a forged cookie tries).
    pub fn set_cookie(&mut self, name: &str, value: &str) {
        self.cookies.insert(name.to_owned(), value.to_owned());
    }

    pub fn cookie(&self, name: &str) -> Option<&String> {
        self.cookies.get(name)
    }

    fn request(&self, method: Method, path: &str) -> axum::http::request::Builder {
        let mut builder = Request::builder().method(method).uri(path);
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            builder = builder.header("cookie", jar.join("; "));
        }
        if self.forwarded_https {
            builder = builder.header("x-forwarded-proto", "https");
        }
        builder
    }

    async fn send(&mut self, request: Request<Body>) -> Page {
        let reply = self.h.send(request).await;
        for value in reply.headers.get_all("set-cookie") {
            let text = value.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || text.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        let location = reply.headers.get("location").map(|l| l.to_str().unwrap().to_owned());
        Page { status: reply.status, location, html: reply.text, headers: reply.headers }
    }
}

async fn credential(h: &Harness, caller: &Caller, id: &str) -> keygate_core::Credential {
    let principal = h.services().authenticate(&caller.token, None).await.unwrap();
    h.services().get_credential(&principal, id.parse().unwrap()).await.unwrap()
}

/// Sets a password for a user the harness made.
async fn set_password(h: &Harness, user: &keygate_core::User, password: &str) {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    h.canary(password);
    let hash = argon2::Argon2::default()
        .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string();
    h.store().set_password_hash(user.id, &hash, keygate_service::now()).await.unwrap();
}

const PASSWORD: &str = "CANARY-pages-password-0001";

/// A super-admin with a password, signed in.
async fn admin<'h>(h: &'h Harness) -> Browser<'h> {
    h.canary(PASSWORD);
    keygate_service::accounts::create_admin(
        &**h.store(),
        "root@example.com",
        &keygate_vault::SecretText::new(PASSWORD.into()),
        &keygate_service::audit::Actor::cli(),
    )
    .await
    .unwrap();
    let mut b = Browser::new(h);
    let signed = b.sign_in("root@example.com", PASSWORD).await;
    assert_eq!(signed.status, 303, "{}", signed.html);
    b
}

/// A person with a password (not an admin), signed in.
pub async fn person<'h>(h: &'h Harness, email: &str) -> (Browser<'h>, Caller) {
    // A claimed deployment: someone administers it (else every page leads to /setup).
    h.super_admin(&format!("operator-of-{email}")).await;
    let caller = h.user(email).await;
    let password = format!("CANARY-{email}-pw");
    set_password(h, &caller.user, &password).await;
    let mut b = Browser::new(h);
    let signed = b.sign_in(email, &password).await;
    assert_eq!(signed.status, 303, "{}", signed.html);
    (b, caller)
}

async fn a_fresh_deployment_is_claimed_once_with_the_setup_code_and_the_wizard_locks(db: TestDb) {
    let h = Harness::new(db).await;
    let code = h.services().issue_setup_code().await.unwrap().expect("a fresh deployment gets a code");
    let code = code.0.expose().to_owned();
    let mut b = Browser::new(&h);
    for path in ["/", "/settings/api-keys", "/admin/providers", "/login"] {
        let page = b.get(path).await;
        assert_eq!((page.status, page.location.as_deref()), (303, Some("/setup")), "{path}");
    }
    let page = b.get("/setup").await;
    assert!(page.html.contains("setup code"), "{}", page.html);
    let csrf = page.csrf();

    // A wrong code creates nothing.
    let fields = [("csrf_token", csrf.as_str()), ("email", "owner@example.com"), ("password", PASSWORD)];
    let wrong = b.post("/setup/claim", &[fields.as_slice(), &[("setup_code", "AAAAA-BBBBB-CCCCC")]].concat()).await;
    assert_eq!(wrong.status, 401, "{}", wrong.html);
    assert!(wrong.html.contains("not the setup code") && !wrong.html.contains(PASSWORD));
    assert!(h.store().users().await.unwrap().is_empty());
    // A short password is refused before the code is spent.
    let short = [("csrf_token", csrf.as_str()), ("email", "owner@example.com"), ("password", "short")];
    let refused = b.post("/setup/claim", &[short.as_slice(), &[("setup_code", code.as_str())]].concat()).await;
    assert_eq!(refused.status, 422, "{}", refused.html);

    // The right code (retyped in lower case) claims it and signs the owner in.
    let typed = code.to_lowercase();
    let claimed = b.post("/setup/claim", &[fields.as_slice(), &[("setup_code", typed.as_str())]].concat()).await;
    assert_eq!((claimed.status, claimed.location.as_deref()), (303, Some("/setup?step=2&done=claimed")));
    assert!(b.cookie("kg_session").is_some());
    let users = h.store().users().await.unwrap();
    assert!(users.len() == 1 && users[0].super_admin);

    // The code is spent: another browser cannot use it.
    let mut other = Browser::new(&h);
    let csrf2 = other.get("/login").await.csrf();
    let again = other
        .post(
            "/setup/claim",
            &[("csrf_token", &csrf2), ("email", "mallory@example.com"), ("password", PASSWORD), ("setup_code", &code)],
        )
        .await;
    assert_eq!(again.location.as_deref(), Some("/login"), "{}", again.html);
    assert_eq!(h.store().users().await.unwrap().len(), 1);

    // Steps can be visited in any order; finishing needs a key.
    for step in 2..=5 {
        let page = b.get(&format!("/setup?step={step}")).await;
        assert_eq!(page.status, 200, "step {step}: {}", page.html);
    }
    assert!(b.get("/setup?step=4").await.html.contains("Client ID"), "Sentinel Hub takes a client id and secret");
    let early = b.submit("/setup?step=5", "/setup/finish", &[]).await;
    assert_eq!(early.status, 422, "{}", early.html);
    assert!(early.html.contains("at least one provider key"));

    // A key per step, validated live; a bad one is saved as invalid with what to do.
    let bad = h.invalid_key("sk-ant-api03-");
    let saved = b
        .submit(
            "/setup?step=2",
            "/setup/key",
            &[("step", "2"), ("provider", "anthropic"), ("secret", &bad), ("use", "demo")],
        )
        .await;
    assert_eq!(saved.status, 303, "{}", saved.html);
    let shown = b.get(saved.location.as_deref().unwrap()).await;
    assert!(shown.html.contains("Invalid"), "{}", shown.html);
    assert!(shown.html.contains("demo allowance"));
    let good = h.valid_key("sk-proj-");
    let saved = b
        .submit(
            "/setup?step=2",
            "/setup/key",
            &[("step", "2"), ("provider", "openai"), ("secret", &good), ("use", "platform")],
        )
        .await;
    let shown = b.get(saved.location.as_deref().unwrap()).await;
    assert!(shown.html.contains("Valid: the provider accepted it"), "{}", shown.html);
    assert!(shown.html.contains(&format!("…{}", &good[good.len() - 4..])));
    // A reload loses nothing: the saved keys are listed on their step.
    let reload = b.get("/setup?step=2").await;
    assert!(reload.html.contains("platform key") && reload.html.contains("demo allowance"));

    let finished = b.submit("/setup?step=5", "/setup/finish", &[]).await;
    assert_eq!(finished.location.as_deref(), Some("/admin/providers?done=setup"), "{}", finished.html);
    let locked = b.get("/setup").await;
    assert_eq!(locked.location.as_deref(), Some("/admin/providers"));
    assert_eq!(Browser::new(&h).get("/setup").await.location.as_deref(), Some("/admin/providers"));
    assert!(h.services().issue_setup_code().await.unwrap().is_none(), "no new code once claimed");
}

async fn pages_are_sent_with_strict_security_headers_and_session_cookies(db: TestDb) {
    let h = Harness::new(db).await;
    let mut b = admin(&h).await;
    let page = b.get("/settings/api-keys").await;
    assert_eq!(page.status, 200, "{}", page.html);
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    assert_eq!(page.headers["x-frame-options"], "DENY");
    assert_eq!(page.headers["cache-control"], "no-store");
    assert!(!page.html.contains("<script>") && !page.html.contains(" style="), "no inline script or style");

    let mut fresh = Browser::new(&h);
    let login = fresh.get("/login").await;
    let set = login.headers["set-cookie"].to_str().unwrap();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && !set.contains("Secure"), "{set}");
    let signed = fresh.sign_in("root@example.com", PASSWORD).await;
    let session =
        signed.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect::<Vec<_>>().join("\n");
    assert!(session.contains("kg_session=kg_") && session.contains("HttpOnly") && session.contains("SameSite=Strict"));
    assert!(!session.contains("Secure"), "plain HTTP without a TLS proxy: {session}");

    let mut tls = Browser::new(&h);
    tls.forwarded_https = true;
    let signed = tls.sign_in("root@example.com", PASSWORD).await;
    let session =
        signed.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect::<Vec<_>>().join("\n");
    assert!(session.contains("Secure"), "behind a TLS proxy: {session}");

    // Without a session a page sends the browser to sign in, and back afterwards.
    let away = Browser::new(&h).get("/settings/tokens?days=7").await;
    assert_eq!(away.location.as_deref(), Some("/login?next=/settings/tokens%3Fdays%3D7"));
    let mut back = Browser::new(&h);
    let csrf = back.get("/login").await.csrf();
    let signed = back
        .post(
            "/login",
            &[
                ("csrf_token", &csrf),
                ("email", "root@example.com"),
                ("password", PASSWORD),
                ("next", "//evil.example/"),
            ],
        )
        .await;
    assert_eq!(signed.location.as_deref(), Some("/settings/api-keys"), "never off-site");
}

async fn every_form_post_needs_its_csrf_field(db: TestDb) {
    let h = Harness::new(db).await;
    let mut b = admin(&h).await;
    let key = h.valid_key("sk-proj-");
    let before = h.store().credentials(&Default::default()).await.unwrap().len();
    for fields in [vec![], vec![("csrf_token", "forged")]] {
        let mut all = fields.clone();
        all.extend([("provider", "openai"), ("secret", key.as_str())]);
        let page = b.post("/settings/api-keys", &all).await;
        assert_eq!(page.status, 403, "{}", page.html);
        assert!(page.html.contains("reload the page"));
    }
    assert_eq!(h.store().credentials(&Default::default()).await.unwrap().len(), before, "nothing saved");
    // Signing in needs the double-submit cookie too.
    let mut anon = Browser::new(&h);
    let csrf = anon.get("/login").await.csrf();
    let mut cookieless = Browser::new(&h);
    let page = cookieless
        .post("/login", &[("csrf_token", &csrf), ("email", "root@example.com"), ("password", PASSWORD)])
        .await;
    assert_eq!(page.status, 403);
    // Signing out too: a forged sign-out does nothing.
    let page = b.post("/logout", &[]).await;
    assert_eq!(page.status, 403);
    assert_eq!(b.get("/settings/api-keys").await.status, 200);
}

async fn a_person_manages_their_keys_on_the_page_without_any_secret_coming_back(db: TestDb) {
    let h = Harness::new(db).await;
    let (mut b, alice) = person(&h, "alice@example.com").await;
    let page = b.get("/settings/api-keys").await;
    assert!(page.html.contains("up to 5 keys") && page.html.contains("one per provider"), "rules before they bite");
    assert!(page.html.contains("https://platform.openai.com/api-keys"), "where to get a key");

    // Add: pasted with spaces and a line break around it.
    let key = h.valid_key("sk-proj-");
    let pasted = format!("  {key}\n");
    let added = b
        .submit(
            "/settings/api-keys",
            "/settings/api-keys",
            &[("provider", "openai"), ("secret", &pasted), ("name", "work")],
        )
        .await;
    assert_eq!(added.status, 303, "{}", added.html);
    let shown = b.get(added.location.as_deref().unwrap()).await;
    let hint = format!("…{}", &key[key.len() - 4..]);
    assert!(shown.html.contains(&hint) && shown.html.contains("Active"), "{}", shown.html);
    let id = h.store().credentials(&Default::default()).await.unwrap()[0].id.to_string();

    // Test key, rename and set the model, disable and enable.
    let base = format!("/settings/api-keys/{id}");
    let tested = b.submit("/settings/api-keys", &format!("{base}/test"), &[]).await;
    assert!(b.get(tested.location.as_deref().unwrap()).await.html.contains("Tested OpenAI key"));
    b.submit("/settings/api-keys", &format!("{base}/edit"), &[("name", "laptop"), ("model", "gpt-4o-mini")]).await;
    let c = credential(&h, &alice, &id).await;
    assert_eq!((c.name.as_str(), c.model.as_deref()), ("laptop", Some("gpt-4o-mini")));
    b.submit("/settings/api-keys", &format!("{base}/edit"), &[("name", "laptop"), ("model", "")]).await;
    assert_eq!(credential(&h, &alice, &id).await.model, None, "an empty model clears it");
    b.submit("/settings/api-keys", &format!("{base}/status"), &[("status", "disabled")]).await;
    assert!(b.get("/settings/api-keys").await.html.contains("Disabled"));
    b.submit("/settings/api-keys", &format!("{base}/status"), &[("status", "active")]).await;

    // Replace: same row, new hint; a rejected replacement is shown, nothing echoed.
    let newer = h.valid_key("sk-proj-");
    let replaced = b.submit("/settings/api-keys", &format!("{base}/replace"), &[("secret", &newer)]).await;
    assert_eq!(replaced.status, 303, "{}", replaced.html);
    let shown = b.get(replaced.location.as_deref().unwrap()).await;
    assert!(shown.html.contains(&format!("…{}", &newer[newer.len() - 4..])) && shown.html.contains("was replaced"));
    assert_eq!(h.store().credentials(&Default::default()).await.unwrap().len(), 1, "same row");
    let spaced = format!("{} {}", &newer[..10], &newer[10..]);
    let refused = b.submit("/settings/api-keys", &format!("{base}/replace"), &[("secret", &spaced)]).await;
    assert_eq!(refused.status, 422);
    assert!(refused.html.contains("spaces or line breaks inside"), "{}", refused.html);

    // An invalid key is saved and marked, with what to do.
    let bad = h.invalid_key("sk-ant-api03-");
    let added =
        b.submit("/settings/api-keys", "/settings/api-keys", &[("provider", "anthropic"), ("secret", &bad)]).await;
    let shown = b.get(added.location.as_deref().unwrap()).await;
    assert!(shown.html.contains("Invalid") && shown.html.contains("console.anthropic.com"), "{}", shown.html);

    // Delete: a confirmation page first, then gone.
    let confirm = b.get(&format!("{base}/delete")).await;
    assert!(confirm.html.contains("cannot be undone") && confirm.html.contains("Delete key"));
    let deleted = b.submit(&format!("{base}/delete"), &format!("{base}/delete"), &[]).await;
    assert_eq!(deleted.location.as_deref(), Some("/settings/api-keys?done=deleted"));
    assert_eq!(h.store().credentials(&Default::default()).await.unwrap().len(), 1);

    // Another person's key is not found on my pages.
    let (mut bob, _) = person(&h, "bob@example.com").await;
    let alices = h.store().credentials(&Default::default()).await.unwrap()[0].id;
    assert_eq!(bob.get(&format!("/settings/api-keys/{alices}/delete")).await.status, 404);
    let page = bob.submit("/settings/api-keys", &format!("/settings/api-keys/{alices}/delete"), &[]).await;
    assert_eq!(page.status, 404);
    assert_eq!(h.store().credentials(&Default::default()).await.unwrap().len(), 1);
}

async fn a_key_of_another_providers_shape_is_caught_before_anything_is_sent(db: TestDb) {
    let h = Harness::new(db).await;
    let (mut b, _) = person(&h, "alice@example.com").await;
    let key = h.valid_key("sk-ant-api03-");
    let before = h.mock.requests().len();
    let page = b
        .submit(
            "/settings/api-keys",
            "/settings/api-keys",
            &[("provider", "openai"), ("secret", &key), ("name", "mine")],
        )
        .await;
    assert_eq!(page.status, 422, "{}", page.html);
    assert!(page.html.contains("looks like an Anthropic key"), "{}", page.html);
    assert!(page.html.contains("value=\"mine\""), "the choices are kept");
    assert_eq!(h.mock.requests().len(), before, "nothing was sent to any provider");
    assert!(h.store().credentials(&Default::default()).await.unwrap().is_empty());
}

async fn signing_out_ends_the_session_at_once(db: TestDb) {
    let h = Harness::new(db).await;
    let mut b = admin(&h).await;
    let session = b.cookie("kg_session").unwrap().clone();
    h.canary(&session);
    let out = b.submit("/settings/api-keys", "/logout", &[]).await;
    assert_eq!(out.location.as_deref(), Some("/login"));
    assert!(b.cookie("kg_session").is_none());
    // The old cookie, replayed, is refused: the session was revoked server-side.
    let mut replay = Browser::new(&h);
    replay.cookies.insert("kg_session".into(), session.clone());
    let page = replay.get("/settings/api-keys").await;
    assert_eq!(page.status, 303);
    assert!(page.location.unwrap().starts_with("/login"));
    assert_eq!(h.get("/api/v1/me", &session).await.status, 401);
}

async fn a_host_sign_in_link_works_once_and_leaves_no_token_in_the_address(db: TestDb) {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let h = Harness::new(db).await;
    let link = |sub: &str| {
        let claims = serde_json::json!({"sub": sub, "email": format!("{sub}@example.com"), "exp": chrono::Utc::now().timestamp() + 120});
        let jwt = encode(&Header::default(), &claims, &EncodingKey::from_secret(JWT_SECRET.as_bytes())).unwrap();
        h.canary(&jwt);
        jwt
    };
    let jwt = link("seven");
    // A HEAD (a link preview) does not use the link up.
    let head =
        Request::builder().method(Method::HEAD).uri(format!("/login/jwt?token={jwt}")).body(Body::empty()).unwrap();
    assert_eq!(h.send(head).await.status, 200);
    // The link lands on a page of keygate's own that sets the session and moves on:
    // a redirect would carry the cross-site origin of the host's link, and a
    // SameSite=Strict cookie would be held back on arrival.
    let mut b = Browser::new(&h);
    let arrived = b.get(&format!("/login/jwt?token={jwt}&next=/settings/usage")).await;
    assert_eq!(arrived.status, 200, "{}", arrived.html);
    assert!(arrived.html.contains("http-equiv=\"refresh\" content=\"0; url=/settings/usage\""), "{}", arrived.html);
    assert!(arrived.html.contains("data-drop-query"), "the page's script drops the token from the address bar");
    assert_eq!(arrived.headers["referrer-policy"], "no-referrer");
    let page = b.get("/settings/api-keys").await;
    assert!(page.html.contains("seven@example.com"), "{}", page.html);
    // The same link again is refused, on this process and on another replica.
    let again = Browser::new(&h).get(&format!("/login/jwt?token={jwt}")).await;
    assert_eq!(again.status, 401);
    assert!(again.html.contains("already used"));
    let replica = h.replica().await;
    let request = Request::builder().uri(format!("/login/jwt?token={jwt}")).body(Body::empty()).unwrap();
    assert_eq!(h.send_to(&replica, request).await.status, 401, "used on every replica");
    // A forged link is refused.
    assert_eq!(Browser::new(&h).get("/login/jwt?token=a.b.c").await.status, 401);

    // A password sign-in can never be sent on to someone else's sign-in link.
    let mallory = link("mallory");
    let mut victim = admin(&h).await;
    let csrf = victim.get("/login").await.csrf();
    let next = format!("/login/jwt?token={mallory}");
    let signed = victim
        .post(
            "/login",
            &[("csrf_token", &csrf), ("email", "root@example.com"), ("password", PASSWORD), ("next", &next)],
        )
        .await;
    assert_eq!(signed.location.as_deref(), Some("/settings/api-keys"));
}

/// `next` values a browser resolves to `/login/jwt?token=…` (dot segments in any
/// spelling, encoded slashes), as the page receives them (already decoded once).
pub(crate) fn dotted_nexts(token: &str) -> Vec<String> {
    [
        "/./login/jwt",
        "/%2e/login/jwt",
        "/%2E/login/jwt",
        "/settings/../login/jwt",
        "/settings/%2e%2E/login/jwt",
        "/settings/.%2e/login/jwt",
        "/settings%2f..%2flogin/jwt",
    ]
    .iter()
    .map(|path| format!("{path}?token={token}"))
    .collect()
}

async fn a_next_with_dot_segments_never_leads_to_someone_elses_sign_in_link(db: TestDb) {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let h = Harness::new(db).await;
    let claims = serde_json::json!({"sub": "mallory", "email": "mallory@example.com", "exp": chrono::Utc::now().timestamp() + 120});
    let mallory = encode(&Header::default(), &claims, &EncodingKey::from_secret(JWT_SECRET.as_bytes())).unwrap();
    h.canary(&mallory);
    let mut victim = admin(&h).await;
    let link = |sub: &str| {
        let claims = serde_json::json!({"sub": sub, "email": format!("{sub}@example.com"), "exp": chrono::Utc::now().timestamp() + 120});
        let jwt = encode(&Header::default(), &claims, &EncodingKey::from_secret(JWT_SECRET.as_bytes())).unwrap();
        h.canary(&jwt);
        jwt
    };
    for (i, next) in dotted_nexts(&mallory).iter().enumerate() {
        let query = serde_urlencoded::to_string([("next", next.as_str())]).unwrap();
        // The sign-in page: neither its form nor its single sign-on links carry it.
        let page = victim.get(&format!("/login?{query}")).await;
        assert_eq!(page.status, 200, "{}", page.html);
        assert!(!page.html.contains(&mallory), "{next}: {}", page.html);
        assert!(page.html.contains("name=\"next\" value=\"/settings/api-keys\""), "{next}: {}", page.html);
        // The password sign-in.
        let csrf = page.csrf();
        let signed = victim
            .post(
                "/login",
                &[("csrf_token", &csrf), ("email", "root@example.com"), ("password", PASSWORD), ("next", next)],
            )
            .await;
        assert_eq!(signed.location.as_deref(), Some("/settings/api-keys"), "{next}");
        // The host application's sign-in link.
        let own = link(&format!("user{i}"));
        let arrived = Browser::new(&h).get(&format!("/login/jwt?token={own}&{query}")).await;
        assert_eq!(arrived.status, 200, "{}", arrived.html);
        assert!(
            arrived.html.contains("http-equiv=\"refresh\" content=\"0; url=/settings/api-keys\""),
            "{next}: {}",
            arrived.html
        );
        assert!(!arrived.html.contains(&mallory));
    }
    // A `next` that worked before still does.
    let csrf = victim.get("/login").await.csrf();
    let fine = "/settings/usage?days=7&q=a%2Fb";
    let signed = victim
        .post("/login", &[("csrf_token", &csrf), ("email", "root@example.com"), ("password", PASSWORD), ("next", fine)])
        .await;
    assert_eq!(signed.location.as_deref(), Some(fine));
}

async fn a_host_user_signed_in_before_the_owner_does_not_lock_the_wizard(db: TestDb) {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let h = Harness::new(db).await;
    let code = h.services().issue_setup_code().await.unwrap().unwrap().0.expose().to_owned();
    let claims = serde_json::json!({"sub": "early", "exp": chrono::Utc::now().timestamp() + 120});
    let jwt = encode(&Header::default(), &claims, &EncodingKey::from_secret(JWT_SECRET.as_bytes())).unwrap();
    h.canary(&jwt);
    assert_eq!(h.get("/api/v1/me", &jwt).await.status, 200, "a host user is provisioned");
    let mut b = Browser::new(&h);
    assert_eq!(b.get("/settings/api-keys").await.location.as_deref(), Some("/setup"), "still unclaimed");
    let csrf = b.get("/setup").await.csrf();
    let claimed = b
        .post(
            "/setup/claim",
            &[("csrf_token", &csrf), ("email", "owner@example.com"), ("password", PASSWORD), ("setup_code", &code)],
        )
        .await;
    assert_eq!(claimed.status, 303, "{}", claimed.html);
    assert_eq!(claimed.location.as_deref(), Some("/setup?step=2&done=claimed"));
}

async fn a_page_without_its_cookie_keeps_the_session_and_errors_carry_the_headers(db: TestDb) {
    let h = Harness::new(db).await;
    let _ = admin(&h).await;
    // No cookie (a cross-site navigation holds a Strict cookie back): no clearing either.
    let away = Browser::new(&h).get("/settings/tokens").await;
    assert_eq!(away.status, 303);
    assert!(away.headers.get("set-cookie").is_none(), "a good session elsewhere is not wiped");
    // A stale cookie is cleared.
    let mut stale = Browser::new(&h);
    stale.cookies.insert("kg_session".into(), "kg_AAAAAAAAAAAAAAAA_nope".into());
    let page = stale.get("/settings/tokens").await;
    assert!(page.headers["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    // Answers keygate writes itself carry the security headers, errors included.
    for (method, path) in [(Method::GET, "/nope"), (Method::GET, "/logout"), (Method::GET, "/api/v1/keys")] {
        let reply = h.send(Request::builder().method(method).uri(path).body(Body::empty()).unwrap()).await;
        let csp = reply.headers.get("content-security-policy").map(|v| v.to_str().unwrap().to_owned());
        assert!(csp.is_some_and(|c| c.contains("frame-ancestors 'none'")), "{path}: {:?}", reply.headers);
        assert_eq!(reply.headers["x-content-type-options"], "nosniff");
    }
    // A CSRF cookie the client made up does not pass, even when the field repeats it.
    let mut forged = Browser::new(&h);
    forged.cookies.insert("kg_csrf".into(), "made-up".into());
    let page = forged
        .post("/login", &[("csrf_token", "made-up"), ("email", "root@example.com"), ("password", PASSWORD)])
        .await;
    assert_eq!(page.status, 403);
}

async fn the_demo_banner_shows_what_is_left_and_turns_off_with_an_own_key(db: TestDb) {
    let h = Harness::new(db).await;
    let root = h.super_admin("root@example.com").await;
    h.operator_key(&root, "openai", "sk-proj-", true).await;
    let (mut b, alice) = person(&h, "alice@example.com").await;
    let page = b.get("/settings/tokens").await;
    assert!(page.html.contains("10,000 of 10,000 demo tokens left today"), "{}", page.html);
    assert!(page.html.contains("resets at 00:00 UTC") && page.html.contains("for OpenAI"));
    // A call on the demo allowance counts down.
    let reply = h.chat(&alice.token).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let page = b.get("/settings/tokens").await;
    assert!(!page.html.contains("10,000 of 10,000"), "{}", page.html);
    assert!(
        page.html.contains("of 10,000 demo tokens left today") && page.html.contains("30 days of demo left"),
        "{}",
        page.html
    );
    // Their own key turns the demo off for that provider.
    let key = h.valid_key("sk-proj-");
    b.submit("/settings/api-keys", "/settings/api-keys", &[("provider", "openai"), ("secret", &key)]).await;
    let page = b.get("/settings/tokens").await;
    assert!(!page.html.contains("demo tokens left today"), "{}", page.html);
    assert!(page.html.contains("The demo allowance is off for OpenAI"));
}

async fn a_workspace_member_sees_shared_keys_but_cannot_change_them(db: TestDb) {
    let h = Harness::new(db).await;
    let (mut owner, owner_caller) = person(&h, "owner@example.com").await;
    let key = h.valid_key("sk-proj-");
    let added = owner
        .submit("/workspace/keys", "/workspace/keys", &[("provider", "openai"), ("secret", &key), ("name", "team")])
        .await;
    assert_eq!(added.status, 303, "{}", added.html);
    let member = h.user("member@example.com").await;
    let member = h.join(&member, owner_caller.workspace, keygate_core::Role::Member).await;
    let password = "CANARY-member-password";
    set_password(&h, &member.user, password).await;
    let mut m = Browser::new(&h);
    m.sign_in("member@example.com", password).await;
    // Switch to the shared workspace (the member belongs to two).
    let page = m.get("/settings/api-keys").await;
    assert!(page.html.contains("workspace-switch"), "a switcher for two workspaces");
    let switched = m
        .submit("/settings/api-keys", "/workspace/switch", &[("workspace_id", &owner_caller.workspace.to_string())])
        .await;
    assert_eq!(switched.status, 303, "{}", switched.html);
    let page = m.get("/workspace/keys").await;
    assert!(page.html.contains("team") && page.html.contains(&format!("…{}", &key[key.len() - 4..])));
    assert!(!page.html.contains("Add a key") && !page.html.contains("/delete"), "members cannot change shared keys");
    let id = h.store().credentials(&Default::default()).await.unwrap()[0].id;
    let page = m.submit("/workspace/keys", &format!("/workspace/keys/{id}/delete"), &[]).await;
    assert!(page.status == 403 || page.status == 404 || page.status == 422, "{}", page.status);
    assert_eq!(h.store().credentials(&Default::default()).await.unwrap().len(), 1);
}

async fn tokens_are_created_shown_once_and_revoked_on_the_page(db: TestDb) {
    let h = Harness::new(db).await;
    let (mut b, alice) = person(&h, "alice@example.com").await;
    let created = b
        .submit("/settings/tokens", "/settings/tokens", &[("name", "backend"), ("scope", "proxy"), ("expires", "30")])
        .await;
    assert_eq!(created.status, 200, "{}", created.html);
    let at = created.html.find("value=\"kg_").expect("the new token is shown once");
    let token = created.html[at + 7..].split('"').next().unwrap().to_owned();
    h.canary(&token);
    assert!(created.html.contains("shows it this once") && created.html.contains("data-copy"));
    assert_eq!(h.get("/api/v1/me", &token).await.status, 200, "the shown token works");
    let listed = b.get("/settings/tokens").await;
    assert!(!listed.html.contains("value=\"kg_"), "never shown again");
    assert!(listed.html.contains("backend") && listed.html.contains("this session"));
    // A scope the person lacks cannot be granted.
    let page = b.submit("/settings/tokens", "/settings/tokens", &[("name", "x"), ("scope", "admin")]).await;
    assert_eq!(page.status, 422, "{}", page.html);
    let tokens = h.services().list_tokens(&h.services().authenticate(&alice.token, None).await.unwrap()).await.unwrap();
    let id = tokens.iter().find(|t| t.name == "backend").unwrap().id;
    let revoked = b.submit("/settings/tokens", &format!("/settings/tokens/{id}/revoke"), &[]).await;
    assert_eq!(revoked.location.as_deref(), Some("/settings/tokens?done=revoked"));
    assert_eq!(h.get("/api/v1/me", &token).await.status, 401);
}
