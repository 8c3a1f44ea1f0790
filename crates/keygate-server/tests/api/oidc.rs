//! Single sign-on (OpenID Connect) through the pages, against keygate-mock's issuer: a
//! browser that keeps cookies walks `/login` → `/login/oidc/<id>` → the issuer's
//! authorization endpoint (which approves at once as the user the test chose) → keygate's
//! callback. Every refusal is a readable page that signs nobody in; the client secret,
//! the codes and the ID tokens never appear in a page or a log line.

use crate::pages::{Browser, Page};
use crate::support::*;
use axum::body::Body;
use axum::http::Request;
use keygate_core::*;
use keygate_mock::OidcUser;
use keygate_service::oidc::OidcProvider;
use keygate_store::both_backends;
use keygate_store::testdb::TestDb;
use keygate_store::AuditFilter;
use keygate_vault::SecretText;

both_backends!(
    a_new_person_signs_in_with_the_issuer_and_lands_signed_in,
    existing_users_are_linked_by_verified_email_and_super_admin_emails_are_promoted,
    every_refusal_is_a_readable_page_that_signs_nobody_in,
    a_rotated_signing_key_is_fetched_once_and_metadata_is_cached,
    the_wizard_creates_the_first_super_admin_through_the_issuer,
    emails_that_fold_into_or_smuggle_another_address_are_refused,
    a_linked_identity_vouching_for_a_super_admin_email_is_not_promoted,
    a_next_with_dot_segments_is_dropped_through_single_sign_on,
);

const CLIENT_ID: &str = "keygate-test-client";
const CLIENT_SECRET: &str = "CANARY-oidc-client-secret-000001";
/// keygate's public URL in these tests: the issuer redirects there, the test strips it.
const PUBLIC: &str = "http://keygate.test";

fn provider(id: &str, name: &str, issuer: &str, domains: &[&str], admins: &[&str]) -> OidcProvider {
    let list = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
    OidcProvider {
        id: id.into(),
        name: name.into(),
        issuer: issuer.into(),
        client_id: CLIENT_ID.into(),
        client_secret: SecretText::new(CLIENT_SECRET.into()),
        redirect_uri: format!("{PUBLIC}/login/oidc/{id}/callback"),
        allowed_emails: Vec::new(),
        allowed_domains: list(domains),
        super_admin_emails: list(admins),
    }
}

/// A keygate with two issuers: the mock's (`mock`, "Mock ID"), and one that never answers.
async fn harness(db: TestDb, domains: &[&str], admins: &[&str]) -> Harness {
    let setup = Setup {
        oidc: vec![
            provider("mock", "Mock ID", "{mock}/oidc", domains, admins),
            provider("down", "Down ID", "http://127.0.0.1:9/oidc", &["example.com"], &[]),
        ],
        ..Setup::default()
    };
    let h = Harness::with(db, setup).await;
    h.canary(CLIENT_SECRET);
    h
}

/// A deployment someone already administers (else every page leads to `/setup`).
async fn claimed(h: &Harness) {
    h.super_admin("operator@elsewhere.example").await;
}

fn next_user(h: &Harness, sub: &str, email: &str) {
    h.mock.oidc(|b| {
        *b = keygate_mock::OidcBehaviour {
            user: OidcUser { sub: sub.into(), email: email.into(), email_verified: true, name: None },
            ..Default::default()
        }
    });
}

/// What the issuer's authorization endpoint answers a browser: the path on keygate it
/// sends the browser back to.
async fn issuer_approves(authorize_url: &str) -> String {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let answer = client.get(authorize_url).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 303, "{}", answer.text().await.unwrap());
    let location = answer.headers()["location"].to_str().unwrap().to_owned();
    location.strip_prefix(PUBLIC).unwrap_or_else(|| panic!("not back to keygate: {location}")).to_owned()
}

/// Starts a sign-in with the mock's issuer; the path the issuer sends the browser back to.
async fn to_callback(b: &mut Browser<'_>, next: &str) -> String {
    let start = b.get(&format!("/login/oidc/mock?next={next}")).await;
    assert_eq!(start.status, 303, "{}", start.html);
    issuer_approves(start.location.as_deref().unwrap()).await
}

/// A whole sign-in: the landing page keygate answers the callback with.
async fn sign_in(b: &mut Browser<'_>, next: &str) -> Page {
    let back = to_callback(b, next).await;
    b.get(&back).await
}

/// The page signs the browser in: the landing page, with the session cookie.
fn assert_signed_in(page: &Page, next: &str) {
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(
        page.html.contains("Signed in") && page.html.contains(&format!("url={}", next.replace('&', "&amp;"))),
        "{}",
        page.html
    );
    let cookies: Vec<&str> = page.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
    let session = cookies.iter().find(|c| c.starts_with("kg_session=kg_")).expect("a session cookie");
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Strict"), "{session}");
    assert!(cookies.iter().any(|c| c.starts_with("kg_oidc=;") && c.contains("Max-Age=0")), "{cookies:?}");
}

/// A refusal: a readable page with `status` saying `says`, and no session.
fn assert_refused(page: &Page, status: u16, says: &str) {
    assert_eq!(page.status, status, "{}", page.html);
    assert!(page.html.contains(says), "expected `{says}` in {}", page.html);
    assert!(page.html.contains("href=\"/login\""), "a way back: {}", page.html);
    assert!(!page.headers.get_all("set-cookie").iter().any(|v| v.to_str().unwrap().starts_with("kg_session=kg_")));
    assert!(page.headers["content-type"].to_str().unwrap().starts_with("text/html"));
}

/// No code or ID token the issuer handed out is in `pages`; from now on, nor in any
/// response or log line.
fn assert_nothing_issued_leaked(h: &Harness, pages: &[&Page]) {
    let issued = h.mock.oidc_issued();
    assert!(!issued.is_empty());
    for secret in &issued {
        for page in pages {
            assert!(!page.html.contains(secret.as_str()), "a page carried a code or ID token: {}", page.html);
        }
        h.canary(secret);
    }
}

async fn user_by_email(h: &Harness, email: &str) -> User {
    h.store().user_by_email(email).await.unwrap().unwrap_or_else(|| panic!("no user {email}"))
}

async fn a_new_person_signs_in_with_the_issuer_and_lands_signed_in(db: TestDb) {
    let h = harness(db, &["example.com"], &[]).await;
    claimed(&h).await;
    next_user(&h, "sub-ann", "Ann@Example.com");
    let mut b = Browser::new(&h);

    let login = b.get("/login?next=/settings/usage").await;
    assert!(login.html.contains("Sign in with Mock ID") && login.html.contains("Sign in with Down ID"));
    assert!(login.html.contains("href=\"/login/oidc/mock?next=/settings/usage\""), "{}", login.html);

    // The start: the flow cookie (Lax, for the cross-site way back) and the issuer's URL.
    let start = b.get("/login/oidc/mock?next=/settings/usage").await;
    assert_eq!(start.status, 303, "{}", start.html);
    let flow = start.headers["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["kg_oidc=", "Path=/login/oidc", "HttpOnly", "SameSite=Lax", "Max-Age=600"] {
        assert!(flow.contains(attribute), "{flow}");
    }
    let authorize = start.location.clone().unwrap();
    assert!(authorize.starts_with(&format!("{}/oidc/authorize?", h.mock.url())), "{authorize}");
    for param in [
        "response_type=code",
        "client_id=keygate-test-client",
        "redirect_uri=http%3A%2F%2Fkeygate.test%2Flogin%2Foidc%2Fmock%2Fcallback",
        "scope=openid%20email%20profile",
        "code_challenge_method=S256",
        "code_challenge=",
        "state=",
        "nonce=",
    ] {
        assert!(authorize.contains(param), "{param} in {authorize}");
    }
    assert!(!authorize.contains("code_verifier") && !authorize.contains(CLIENT_SECRET));

    let back = issuer_approves(&authorize).await;
    let landed = b.get(&back).await;
    assert_signed_in(&landed, "/settings/usage");
    assert_nothing_issued_leaked(&h, &[&login, &start, &landed]);

    // Signed in as a new user, with the identity linked and a personal workspace.
    let ann = user_by_email(&h, "ann@example.com").await;
    assert!(!ann.super_admin && ann.external_id.is_none());
    let linked = h.store().user_by_identity(&format!("{}/oidc", h.mock.url()), "sub-ann").await.unwrap();
    assert_eq!(linked.map(|u| u.id), Some(ann.id));
    let usage = b.get("/settings/usage").await;
    assert_eq!(usage.status, 200, "{}", usage.html);
    assert!(usage.html.contains("ann@example.com"));
    let logins = h
        .store()
        .audit_events(&AuditFilter {
            action: Some(AuditAction::AuthLogin),
            actor_user_id: Some(ann.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(logins.iter().any(|e| e.result == AuditResult::Ok && e.detail.as_deref().unwrap().contains("\"oidc\"")));

    // Again, in another browser: the same user, no second account; `next` stays on pages.
    let mut again = Browser::new(&h);
    let landed = sign_in(&mut again, "https://evil.example/").await;
    assert_signed_in(&landed, "/settings/api-keys");
    assert_eq!(h.store().users().await.unwrap().len(), 2, "the operator and Ann");
    assert_nothing_issued_leaked(&h, &[&landed]);
}

async fn existing_users_are_linked_by_verified_email_and_super_admin_emails_are_promoted(db: TestDb) {
    // No allowed_emails or allowed_domains: only people keygate already knows, and the
    // super-admin emails.
    let h = harness(db, &[], &["boss@corp.example", "deputy@corp.example"]).await;
    claimed(&h).await;
    let bob = h.user("bob@example.com").await;

    next_user(&h, "sub-bob", "bob@example.com");
    let mut b = Browser::new(&h);
    assert_signed_in(&sign_in(&mut b, "/settings/tokens").await, "/settings/tokens");
    let issuer = format!("{}/oidc", h.mock.url());
    assert_eq!(h.store().user_by_identity(&issuer, "sub-bob").await.unwrap().map(|u| u.id), Some(bob.user.id));
    assert!(b.get("/settings/tokens").await.html.contains("bob@example.com"));

    // A host application's user whose JWT carried the email is the same person too.
    use jsonwebtoken::{encode, EncodingKey, Header};
    let claims =
        serde_json::json!({"sub": "host-7", "email": "carol@example.com", "exp": chrono::Utc::now().timestamp() + 120});
    let jwt = encode(&Header::default(), &claims, &EncodingKey::from_secret(JWT_SECRET.as_bytes())).unwrap();
    assert_eq!(h.get("/api/v1/me", &jwt).await.status, 200);
    let carol = user_by_email(&h, "carol@example.com").await;
    next_user(&h, "sub-carol", "carol@example.com");
    assert_signed_in(&sign_in(&mut Browser::new(&h), "/settings/usage").await, "/settings/usage");
    let linked = h.store().user_by_identity(&issuer, "sub-carol").await.unwrap().unwrap();
    assert_eq!((linked.id, linked.external_id.as_deref()), (carol.id, Some("host-7")));

    // Someone keygate does not know is refused, and nothing is created.
    next_user(&h, "sub-dan", "dan@example.com");
    let refused = sign_in(&mut Browser::new(&h), "/").await;
    assert_refused(&refused, 403, "No keygate account uses dan@example.com");
    assert!(h.store().user_by_email("dan@example.com").await.unwrap().is_none());
    let denied = h
        .store()
        .audit_events(&AuditFilter { action: Some(AuditAction::AuthLogin), ..Default::default() })
        .await
        .unwrap();
    assert!(denied.iter().any(|e| e.result == AuditResult::Denied && e.actor.contains("dan@example.com")));

    // A super-admin email: created, and a super-admin from this sign-in on.
    next_user(&h, "sub-boss", "boss@corp.example");
    let mut boss = Browser::new(&h);
    assert_signed_in(&sign_in(&mut boss, "/admin/users").await, "/admin/users");
    assert!(user_by_email(&h, "boss@corp.example").await.super_admin);
    assert_eq!(boss.get("/admin/users").await.status, 200);
    // An existing user named in super_admin_emails is promoted as they sign in.
    let deputy = h.user("deputy@corp.example").await;
    assert!(!deputy.user.super_admin);
    next_user(&h, "sub-deputy", "deputy@corp.example");
    assert_signed_in(&sign_in(&mut Browser::new(&h), "/").await, "/");
    let promoted = user_by_email(&h, "deputy@corp.example").await;
    assert!(promoted.id == deputy.user.id && promoted.super_admin);
    assert_nothing_issued_leaked(&h, &[]);
}

async fn every_refusal_is_a_readable_page_that_signs_nobody_in(db: TestDb) {
    let h = harness(db, &["example.com"], &[]).await;
    claimed(&h).await;
    next_user(&h, "sub-eve", "eve@example.com");
    let mut pages = Vec::new();

    // The answer does not match the sign-in this browser started (state).
    let mut b = Browser::new(&h);
    let back = to_callback(&mut b, "/").await;
    let forged = back.replacen("state=", "state=x", 1);
    pages.push(b.get(&forged).await);
    assert_refused(pages.last().unwrap(), 400, "does not belong to the sign-in this browser started");
    // Another browser (no flow cookie) with a genuine answer.
    let back = to_callback(&mut Browser::new(&h), "/").await;
    pages.push(Browser::new(&h).get(&back).await);
    assert_refused(pages.last().unwrap(), 400, "not started in this browser");

    // A replayed code (the answer reloaded, or copied with the flow cookie): the issuer
    // says invalid_grant.
    let mut b = Browser::new(&h);
    let back = to_callback(&mut b, "/").await;
    let flow = b.cookie("kg_oidc").unwrap().clone();
    assert_signed_in(&b.get(&back).await, "/");
    let again = Request::builder().uri(&back).header("cookie", format!("kg_oidc={flow}")).body(Body::empty()).unwrap();
    let reply = h.send(again).await;
    pages.push(Page { status: reply.status, location: None, html: reply.text, headers: reply.headers });
    assert_refused(pages.last().unwrap(), 400, "already used or has expired (invalid_grant)");

    // ID tokens that do not verify.
    for (knob, says) in [
        ("expired", "it has expired"),
        ("not_yet_valid", "it is not valid yet"),
        ("audience", "issued for another application"),
        ("nonce", "is not the one this sign-in sent"),
        ("unpublished", "a key the issuer does not publish"),
    ] {
        h.mock.oidc(|b| match knob {
            "expired" => b.expired = true,
            "not_yet_valid" => b.not_yet_valid = true,
            "audience" => b.audience = Some("someone-else".into()),
            "nonce" => b.wrong_nonce = true,
            _ => b.unpublished_key = true,
        });
        pages.push(sign_in(&mut Browser::new(&h), "/").await);
        assert_refused(pages.last().unwrap(), 400, says);
        next_user(&h, "sub-eve", "eve@example.com");
    }

    // Unverified email, a domain not allowed, a declined sign-in: 403, audited.
    h.mock.oidc(|b| b.user.email_verified = false);
    pages.push(sign_in(&mut Browser::new(&h), "/").await);
    assert_refused(pages.last().unwrap(), 403, "is not verified");
    next_user(&h, "sub-mal", "mallory@elsewhere.example");
    pages.push(sign_in(&mut Browser::new(&h), "/").await);
    assert_refused(pages.last().unwrap(), 403, "mallory@elsewhere.example may not sign in here");
    h.mock.oidc(|b| b.deny = true);
    pages.push(sign_in(&mut Browser::new(&h), "/").await);
    assert_refused(pages.last().unwrap(), 403, "did not sign you in");
    let denied = h
        .store()
        .audit_events(&AuditFilter { action: Some(AuditAction::AuthLogin), ..Default::default() })
        .await
        .unwrap();
    let reasons: Vec<&str> =
        denied.iter().filter(|e| e.result == AuditResult::Denied).filter_map(|e| e.detail.as_deref()).collect();
    assert!(reasons.iter().any(|d| d.contains("email not verified") && d.contains("eve@example.com")), "{reasons:?}");
    assert!(reasons.iter().any(|d| d.contains("email not allowed") && d.contains("mallory@elsewhere.example")));

    // An issuer that does not answer: 502, said in words.
    let down = Browser::new(&h).get("/login/oidc/down?next=/").await;
    assert_refused(&down, 502, "could not read Down ID");
    // An unknown provider.
    let unknown = Browser::new(&h).get("/login/oidc/nope").await;
    assert_refused(&unknown, 400, "No sign-in provider `nope`");

    assert!(h.store().user_by_email("mallory@elsewhere.example").await.unwrap().is_none());
    assert!(h.store().user_by_email("eve@example.com").await.unwrap().is_some(), "the one sign-in that worked");
    let refs: Vec<&Page> = pages.iter().collect();
    assert_nothing_issued_leaked(&h, &refs);
}

async fn a_rotated_signing_key_is_fetched_once_and_metadata_is_cached(db: TestDb) {
    let h = harness(db, &["example.com"], &[]).await;
    claimed(&h).await;
    next_user(&h, "sub-kim", "kim@example.com");
    assert_signed_in(&sign_in(&mut Browser::new(&h), "/").await, "/");
    assert_signed_in(&sign_in(&mut Browser::new(&h), "/").await, "/");
    assert_eq!(h.mock.oidc_fetches(), (1, 1), "discovery and JWKS fetched once, then cached");

    // The issuer rotates: the new key's kid is unknown to keygate's cached JWKS.
    h.mock.oidc(|b| b.rotate_keys = true);
    assert_signed_in(&sign_in(&mut Browser::new(&h), "/").await, "/");
    assert_eq!(h.mock.oidc_fetches(), (1, 2), "the JWKS fetched again, once");
    assert_signed_in(&sign_in(&mut Browser::new(&h), "/").await, "/");
    assert_eq!(h.mock.oidc_fetches(), (1, 2));
    assert_nothing_issued_leaked(&h, &[]);
}

async fn the_wizard_creates_the_first_super_admin_through_the_issuer(db: TestDb) {
    let h = harness(db, &[], &[]).await;
    let code = h.services().issue_setup_code().await.unwrap().unwrap().0.expose().to_owned();
    h.canary(&code);
    next_user(&h, "sub-owner", "owner@example.com");
    let mut b = Browser::new(&h);
    // Before anyone claims it, sign-in leads to the wizard.
    assert_eq!(b.get("/login/oidc/mock").await.location.as_deref(), Some("/setup"));
    let page = b.get("/setup").await;
    assert!(page.html.contains("Create the first super-admin with Mock ID"), "{}", page.html);
    assert!(page.html.contains("formaction=\"/setup/oidc/mock\""));
    let csrf = page.csrf();

    // A wrong code goes nowhere.
    let wrong = b.post("/setup/oidc/mock", &[("csrf_token", &csrf), ("setup_code", "AAAAA-BBBBB-CCCCC")]).await;
    assert_eq!(wrong.status, 401, "{}", wrong.html);
    assert!(wrong.html.contains("not the setup code") && wrong.location.is_none());
    // Without CSRF, nothing.
    assert_eq!(b.post("/setup/oidc/mock", &[("setup_code", &code)]).await.status, 403);

    // The right code: a page with the way on (a form's answer may not redirect off-site).
    let accepted = b
        .post("/setup/oidc/mock", &[("csrf_token", &csrf), ("setup_code", &code), ("email", ""), ("password", "")])
        .await;
    assert_eq!(accepted.status, 200, "{}", accepted.html);
    assert!(accepted.html.contains("Continue with Mock ID"));
    let marker = "id=\"continue\" href=\"";
    let at = accepted.html.find(marker).unwrap() + marker.len();
    let authorize = accepted.html[at..accepted.html[at..].find('"').unwrap() + at].replace("&amp;", "&");
    assert!(h.store().users().await.unwrap().is_empty(), "nothing claimed before the issuer answers");

    // The code changes meanwhile (keygate restarted): the proof no longer holds.
    let back = issuer_approves(&authorize).await;
    let second = h.services().issue_setup_code().await.unwrap().unwrap().0.expose().to_owned();
    h.canary(&second);
    let stale = b.get(&back).await;
    assert_refused(&stale, 400, "The setup code you entered is no longer the one in force");
    assert!(h.store().users().await.unwrap().is_empty());

    // With the current code: the signed-in email becomes the first super-admin.
    let csrf = b.get("/setup").await.csrf();
    let accepted = b.post("/setup/oidc/mock", &[("csrf_token", &csrf), ("setup_code", &second)]).await;
    let at = accepted.html.find(marker).unwrap() + marker.len();
    let authorize = accepted.html[at..accepted.html[at..].find('"').unwrap() + at].replace("&amp;", "&");
    let landed = b.get(&issuer_approves(&authorize).await).await;
    assert_signed_in(&landed, "/setup?step=2&done=claimed");
    let owner = user_by_email(&h, "owner@example.com").await;
    assert!(owner.super_admin);
    let step2 = b.get("/setup?step=2&done=claimed").await;
    assert_eq!(step2.status, 200, "{}", step2.html);
    assert!(step2.html.contains("Your super-admin account is ready"));
    assert_eq!(h.services().setup_state().await.unwrap(), keygate_service::setup::SetupState::Open);

    // The code is spent: neither form claims it again.
    let mut other = Browser::new(&h);
    let csrf = other.get("/login").await.csrf();
    let again = other.post("/setup/oidc/mock", &[("csrf_token", &csrf), ("setup_code", &second)]).await;
    assert_eq!(again.location.as_deref(), Some("/login"));
    assert!(h.services().issue_setup_code().await.unwrap().is_none());
    assert_nothing_issued_leaked(&h, &[&accepted, &landed, &step2]);
}

async fn emails_that_fold_into_or_smuggle_another_address_are_refused(db: TestDb) {
    let h = harness(db, &["example.com"], &["kim@corp.example"]).await;
    claimed(&h).await;
    let kate = h.user("kate@example.com").await;
    let issuer = format!("{}/oidc", h.mock.url());
    let users_before = h.store().users().await.unwrap().len();
    let mut pages = Vec::new();
    for (sub, email) in [
        // The Kelvin sign lower-cases (Unicode) to `k`: Kate's account, a super-admin's email.
        ("sub-kelvin", "\u{212A}ate@example.com"),
        ("sub-kelvin-admin", "\u{212A}im@corp.example"),
        // The allowed domain after the last `@`, another before it; a NUL inside.
        ("sub-two-ats", "x@evil.test@example.com"),
        ("sub-nul", "x@evil.test\u{0}@example.com"),
        ("sub-space", "x y@example.com"),
        ("sub-nodot", "x@example"),
    ] {
        next_user(&h, sub, email);
        let page = sign_in(&mut Browser::new(&h), "/").await;
        assert_refused(&page, 403, "Email address not accepted");
        assert!(h.store().user_by_identity(&issuer, sub).await.unwrap().is_none(), "{email:?} linked");
        pages.push(page);
    }
    assert_eq!(h.store().users().await.unwrap().len(), users_before, "no account was created");
    let kate_now = user_by_email(&h, "kate@example.com").await;
    assert!(!kate_now.super_admin && kate_now.id == kate.user.id);
    assert!(h.store().user_by_email("kim@corp.example").await.unwrap().is_none());
    let denied = h
        .store()
        .audit_events(&AuditFilter { action: Some(AuditAction::AuthLogin), ..Default::default() })
        .await
        .unwrap();
    let refusals = denied.iter().filter(|e| {
        e.result == AuditResult::Denied && e.detail.as_deref().unwrap_or_default().contains("email not accepted")
    });
    assert_eq!(refusals.count(), 6, "every refusal is audited");
    // A plain address at the allowed domain still signs in.
    next_user(&h, "sub-x", "X@Example.com");
    assert_signed_in(&sign_in(&mut Browser::new(&h), "/").await, "/");
    assert!(h.store().user_by_email("x@example.com").await.unwrap().is_some());
    let refs: Vec<&Page> = pages.iter().collect();
    assert_nothing_issued_leaked(&h, &refs);
}

async fn a_linked_identity_vouching_for_a_super_admin_email_is_not_promoted(db: TestDb) {
    let h = harness(db, &[], &["boss@corp.example"]).await;
    claimed(&h).await;
    let amy = h.user("amy@example.com").await;
    next_user(&h, "sub-amy", "amy@example.com");
    assert_signed_in(&sign_in(&mut Browser::new(&h), "/").await, "/");
    // The issuer later vouches for a listed super-admin email for Amy's identity: she signs
    // in as herself (the listed address is allowed), and is not promoted, because her
    // account's own email is not the listed one.
    next_user(&h, "sub-amy", "boss@corp.example");
    let mut b = Browser::new(&h);
    assert_signed_in(&sign_in(&mut b, "/").await, "/");
    let amy_now = h.store().user(amy.user.id).await.unwrap();
    assert!(!amy_now.super_admin, "promoted by another address");
    assert_eq!(b.get("/admin/users").await.status, 403);
    assert!(h.store().user_by_email("boss@corp.example").await.unwrap().is_none());
    // The account whose own email is listed is promoted, whatever its case at the issuer.
    next_user(&h, "sub-boss", "Boss@Corp.Example");
    assert_signed_in(&sign_in(&mut Browser::new(&h), "/").await, "/");
    assert!(user_by_email(&h, "boss@corp.example").await.super_admin);
    assert_nothing_issued_leaked(&h, &[]);
}

async fn a_next_with_dot_segments_is_dropped_through_single_sign_on(db: TestDb) {
    let h = harness(db, &["example.com"], &[]).await;
    claimed(&h).await;
    next_user(&h, "sub-nia", "nia@example.com");
    for next in crate::pages::dotted_nexts("a.b.c") {
        let query = serde_urlencoded::to_string([("next", next.as_str())]).unwrap();
        let login = Browser::new(&h).get(&format!("/login?{query}")).await;
        assert!(login.html.contains("href=\"/login/oidc/mock?next=/settings/api-keys\""), "{next}: {}", login.html);
        let mut b = Browser::new(&h);
        let start = b.get(&format!("/login/oidc/mock?{query}")).await;
        assert_eq!(start.status, 303, "{}", start.html);
        let landed = b.get(&issuer_approves(start.location.as_deref().unwrap()).await).await;
        assert_signed_in(&landed, "/settings/api-keys");
    }
    // A `next` that worked before still does.
    assert_signed_in(&sign_in(&mut Browser::new(&h), "/settings/usage").await, "/settings/usage");
    assert_nothing_issued_leaked(&h, &[]);
}
