"""Browser tests of keygate's server-rendered pages, in headless Chromium against one
keygate (fresh data dir) and keygate-mock. The tests run in file order and share that
one instance, building on each other (the setup wizard first, then sign-in, keys, ...);
a test that needs an earlier one is marked with @needs("test_name").

Every page visited is checked the same way (`visit`): axe-core finds no serious or
critical violation, the browser console shows no CSP violation or script error, and no
secret (provider keys, the password, tokens, the setup code) is in its HTML in any
encoding. Screenshots go to target/browser-screenshots/.

Run by scripts/browser-test.sh (which installs Chromium, Selenium and axe-core):
    scripts/browser-test.sh                         # every test
    scripts/browser-test.sh wizard                  # only tests whose names contain that
"""

import base64
import hashlib
import hmac
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    api,
    url,
    browser,
    canary_sweep,
    check_axe,
    check_console,
    click_button,
    current_path,
    desktop,
    fill,
    go,
    mobile,
    mock_accept_key,
    needs,
    oidc_next_user,
    page_source,
    page_text,
    run_tests,
    setup_code,
    shot,
    start_browser,
    start_stack,
    wait_for,
    wait_for_path,
)

STAMP = str(int(time.time()))
ADMIN_EMAIL = "owner@example.com"
ADMIN_PASSWORD = "CANARY-owner-password-" + STAMP
JWT_SECRET = "CANARY-host-jwt-secret-0123456789abcdef-" + STAMP
ANTHROPIC_OPERATOR = "sk-ant-api03-opCANARY" + STAMP + "00000000001"
OPENAI_OPERATOR_BAD = "sk-proj-opCANARYbad" + STAMP + "000000001"
SENTINEL = ("sh-client-" + STAMP, "sh-CANARY-secret-" + STAMP)
USER_OPENAI = "sk-proj-userCANARY" + STAMP + "0000000001"
USER_OPENAI_2 = "sk-proj-userCANARY" + STAMP + "0000000002"
USER_OPENAI_BAD = "sk-proj-userCANARYbad" + STAMP + "00000001"
USER_ANTHROPIC_WRONG = "sk-ant-api03-userCANARY" + STAMP + "000001"
OIDC_CLIENT = ("keygate-browser", "CANARY-oidc-client-secret-" + STAMP)

CANARIES = [
    ADMIN_PASSWORD,
    JWT_SECRET,
    ANTHROPIC_OPERATOR,
    OPENAI_OPERATOR_BAD,
    SENTINEL[1],
    USER_OPENAI,
    USER_OPENAI_2,
    USER_OPENAI_BAD,
    USER_ANTHROPIC_WRONG,
    OIDC_CLIENT[1],
]
STATE = {}


def visit(path, name, axe_ignore=()):
    """Opens `path`, then checks the page like every other: a screenshot, axe, the
    console, and the canary sweep."""
    go(path)
    return check_page(name, axe_ignore)


def check_page(name, axe_ignore=()):
    shot(name)
    canary_sweep(page_source(), CANARIES + STATE.get("more_canaries", []))
    check_axe(name, ignore=axe_ignore)
    check_console()
    return browser()


def submit_form(action, fields, button):
    """Fills the fields of the form posting to `action` and presses `button` in it."""
    from selenium.webdriver.common.by import By

    form = browser().find_element(By.CSS_SELECTOR, f"form[action='{action}']")
    for name, value in fields.items():
        field = form.find_element(By.NAME, name)
        if field.get_attribute("type") == "radio":
            form.find_element(By.CSS_SELECTOR, f"input[name='{name}'][value='{value}']").click()
        elif field.tag_name == "select":
            from selenium.webdriver.support.ui import Select

            Select(field).select_by_value(value)
        elif "\n" in value:
            # A paste with a line break (typing it would press Enter and send the form).
            browser().execute_script("arguments[0].value = arguments[1]", field, value)
        else:
            field.clear()
            field.send_keys(value)
    form.find_element(By.XPATH, f".//button[contains(normalize-space(.), '{button}')]").click()


def jwt(claims):
    """An HS256 JWT signed with the stack's host secret."""

    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims).encode())
    signature = hmac.new(JWT_SECRET.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


def click_link(text):
    """Clicks the link (a button-styled <a>) whose text contains `text`."""
    from selenium.webdriver.common.by import By

    links = [a for a in browser().find_elements(By.PARTIAL_LINK_TEXT, text) if a.is_displayed()]
    assert links, f"no link {text!r} on {current_path()}"
    links[0].click()


def row_of(provider):
    from selenium.webdriver.common.by import By

    rows = browser().find_elements(By.CSS_SELECTOR, f"tr[data-provider='{provider}']")
    assert rows, f"no {provider} row on {current_path()}:\n{page_text()}"
    return rows[0]


def test_fresh_start_leads_to_setup():
    start_stack(
        valid_keys=[ANTHROPIC_OPERATOR, USER_OPENAI, USER_OPENAI_2],
        oauth_clients=[f"{SENTINEL[0]}:{SENTINEL[1]}"],
        extra_env={"KEYGATE_JWT_HS256_SECRET": JWT_SECRET},
        oidc_client=f"{OIDC_CLIENT[0]}:{OIDC_CLIENT[1]}",
    )
    start_browser()
    for path in ("/", "/settings/api-keys", "/admin/providers", "/login"):
        go(path)
        wait_for_path("/setup")
    STATE["more_canaries"] = [setup_code()]
    visit("/setup", "setup-1-claim")
    assert "setup code" in page_text()
    # Single sign-on is configured: the first super-admin can also be made through it.
    assert "Create the first super-admin with Mock ID" in page_text()
    browser().execute_script("window.scrollTo(0, document.body.scrollHeight)")
    shot("setup-1-claim-sso")


@needs("test_fresh_start_leads_to_setup")
def test_the_wizard_claims_adds_keys_per_step_and_locks():
    code = setup_code()
    # A wrong code first: nothing is created, the typed email stays, the password does not.
    submit_form("/setup/claim", {"setup_code": "AAAAA-BBBBB-CCCCC", "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}, "Create account")
    wait_for("text=not the setup code")
    check_page("setup-1-wrong-code")
    submit_form("/setup/claim", {"setup_code": code, "password": ADMIN_PASSWORD}, "Create account")
    wait_for_path("/setup")
    wait_for("text=Your super-admin account is ready")
    check_page("setup-2-ai-providers")

    # Step 2: Anthropic shared as the demo allowance (valid), OpenAI as a platform key (rejected).
    from selenium.webdriver.common.by import By

    def add_in(provider, fields, use):
        section = browser().find_element(By.ID, f"provider-{provider}")
        for name, value in fields.items():
            field = section.find_element(By.NAME, name)
            field.clear()
            field.send_keys(value)
        section.find_element(By.CSS_SELECTOR, f"input[name='use'][value='{use}']").click()
        section.find_element(By.XPATH, ".//button[contains(., 'Save')]").click()

    add_in("anthropic", {"secret": ANTHROPIC_OPERATOR}, "demo")
    wait_for("text=Valid: the provider accepted it")
    check_page("setup-2-anthropic-valid")
    add_in("openai", {"secret": OPENAI_OPERATOR_BAD}, "platform")
    wait_for("text=Invalid: the provider rejected it")
    check_page("setup-2-openai-invalid")
    assert "platform.openai.com" in page_text(), "what to do names where to get a key"

    # A reload loses nothing.
    browser().refresh()
    wait_for("text=demo allowance")
    assert ANTHROPIC_OPERATOR[-4:] in page_text()

    # Step 3 skipped; step 4 Sentinel Hub's client id and secret; then back to 3 and on.
    click_link("Next")
    wait_for("text=Mapbox")
    check_page("setup-3-maps")
    click_link("Next")
    wait_for("text=Sentinel Hub")
    add_in("sentinel_hub", {"client_id": SENTINEL[0], "client_secret": SENTINEL[1]}, "platform")
    wait_for("text=Sentinel Hub key")
    check_page("setup-4-satellite")
    click_link("Back")
    wait_for("text=Mapbox")
    go("/setup?step=5")
    wait_for("text=Resend")
    check_page("setup-5-email")
    click_button("Finish setup")
    wait_for_path("/admin/providers")
    wait_for("text=Setup is finished")
    check_page("admin-providers-after-setup")
    go("/setup")
    wait_for_path("/admin/providers")


@needs("test_the_wizard_claims_adds_keys_per_step_and_locks")
def test_sign_out_and_in():
    click_button("Sign out")
    wait_for_path("/login")
    check_page("login")
    go("/settings/tokens")
    wait_for_path("/login")
    fill("email", ADMIN_EMAIL)
    fill("password", "wrong-password-123")
    click_button("Sign in")
    wait_for("text=wrong email or password")
    check_page("login-wrong")
    fill("password", ADMIN_PASSWORD)
    click_button("Sign in")
    wait_for_path("/settings/tokens")
    assert ADMIN_EMAIL in page_text()


@needs("test_the_wizard_claims_adds_keys_per_step_and_locks")
def test_a_host_user_arrives_by_link_and_sees_the_demo_banner():
    # A fresh browser profile would be cleaner; signing out is what a person does.
    click_button("Sign out")
    wait_for_path("/login")
    token = jwt({"sub": "host-user-1", "email": "dana@example.com", "exp": int(time.time()) + 300})
    STATE["more_canaries"].append(token)
    # The link is followed from the host application's site (another site: localhost
    # is not 127.0.0.1), as a person clicks it there; the SameSite=Strict session must
    # still arrive.
    go(url("/healthz").replace("127.0.0.1", "localhost"))
    browser().execute_script(
        "const a = document.createElement('a'); a.href = arguments[0]; a.textContent = 'keys';"
        "document.body.appendChild(a); a.click();",
        url(f"/login/jwt?token={token}"),
    )
    wait_for_path("/settings/api-keys", timeout=10)
    assert "token=" not in browser().current_url, "the token is dropped from the address bar"
    assert "dana@example.com" in page_text(), page_text()
    wait_for("text=of 10,000 demo tokens left today")
    check_page("dana-keys-empty-with-demo-banner")
    assert "for Anthropic" in page_text()
    # The link works once.
    go(f"/login/jwt?token={token}")
    wait_for("text=already used")
    check_console(ignore=("/login/jwt",))  # the refused link's own 401


@needs("test_a_host_user_arrives_by_link_and_sees_the_demo_banner")
def test_a_person_adds_tests_replaces_and_deletes_keys():
    go("/settings/api-keys")
    assert "up to 5 keys" in page_text() and "one per provider" in page_text()
    # A key for the wrong provider is caught before anything is sent.
    submit_form("/settings/api-keys", {"provider": "openai", "secret": USER_ANTHROPIC_WRONG, "name": "mine"}, "Add and test")
    wait_for("text=looks like an Anthropic key")
    check_page("keys-wrong-provider")
    # An invalid key is saved, marked, and explained.
    submit_form("/settings/api-keys", {"provider": "openai", "secret": "  " + USER_OPENAI_BAD + "\n", "name": "old"}, "Add and test")
    wait_for("text=Invalid: the provider rejected it")
    check_page("keys-invalid")
    # A valid one replaces it (one per provider).
    submit_form("/settings/api-keys", {"provider": "openai", "secret": USER_OPENAI, "name": "work"}, "Add and test")
    wait_for("text=Valid: the provider accepted it")
    row = row_of("openai")
    assert f"…{USER_OPENAI[-4:]} · Active" in row.text, row.text
    check_page("keys-valid")
    from selenium.webdriver.common.by import By

    row.find_element(By.XPATH, ".//button[normalize-space(.)='Test key']").click()
    wait_for("text=Tested OpenAI key")
    # Replace the secret: same row.
    row = row_of("openai")
    row.find_element(By.XPATH, ".//summary[normalize-space(.)='Replace key']").click()
    row.find_element(By.CSS_SELECTOR, "input[name='secret']").send_keys(USER_OPENAI_2)
    row.find_element(By.XPATH, ".//button[normalize-space(.)='Replace']").click()
    wait_for("text=was replaced")
    assert f"…{USER_OPENAI_2[-4:]} · Active" in row_of("openai").text
    check_page("keys-replaced")
    # Rename and set a model.
    row = row_of("openai")
    row.find_element(By.XPATH, ".//summary[normalize-space(.)='Edit']").click()
    model = row.find_element(By.CSS_SELECTOR, "input[name='model']")
    model.clear()
    model.send_keys("gpt-4o-mini")
    row.find_element(By.XPATH, ".//button[normalize-space(.)='Save']").click()
    wait_for("text=updated")
    assert "gpt-4o-mini" in row_of("openai").text
    mobile()
    visit("/settings/api-keys", "keys-mobile")
    desktop()
    # The demo is now off for OpenAI? No: the demo key is Anthropic's; it stays on.
    assert "demo tokens left today" in page_text()


@needs("test_a_person_adds_tests_replaces_and_deletes_keys")
def test_a_token_from_the_page_makes_a_call_that_shows_in_usage():
    visit("/settings/tokens", "tokens")
    submit_form("/settings/tokens", {"name": "script"}, "Create token")
    wait_for("text=Copy it now")
    from selenium.webdriver.common.by import By

    token = browser().find_element(By.ID, "new-token").get_attribute("value")
    assert token.startswith("kg_")
    shot("token-created")
    check_axe("token-created")
    check_console()
    status, _ = api("POST", "/proxy/openai/v1/chat/completions",
                    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}, token=token, expect=200)
    status, _ = api("POST", "/proxy/anthropic/v1/messages",
                    {"model": "claude-sonnet-4-20250514", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]},
                    token=token, expect=200)
    STATE["more_canaries"].append(token)
    STATE["dana_token"] = token
    # Usage is written in batches: wait for it to reach the page.
    deadline = time.monotonic() + 10
    while True:
        go("/settings/usage?days=7&by=provider")
        text = page_text()
        if "OpenAI" in text and "Anthropic" in text:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"the calls did not reach the usage page:\n{text}")
        time.sleep(0.5)
    check_page("usage-by-provider")
    assert browser().find_elements(By.CSS_SELECTOR, "svg[role='img']"), "charts are SVG images with a name"
    visit("/settings/usage?days=30&by=source", "usage-by-source")
    # The demo banner counted the Anthropic call down.
    assert "10,000 of 10,000" not in page_text()
    wait_for("text=of 10,000 demo tokens left today")
    mobile()
    visit("/settings/usage?days=7&by=provider", "usage-mobile")
    desktop()


@needs("test_a_token_from_the_page_makes_a_call_that_shows_in_usage")
def test_a_sandbox_session_is_started_used_and_revoked_on_its_page():
    from selenium.webdriver.common.by import By

    visit("/settings/sessions", "sessions-empty")
    browser().find_element(By.CSS_SELECTOR, "input[name='provider'][value='openai']").click()
    submit_form("/settings/sessions", {"name": "agent workroom", "max_requests": "2"}, "Start session")
    wait_for("text=Copy its token now")
    token = browser().find_element(By.ID, "new-token").get_attribute("value")
    assert token.startswith("kg_"), token
    # The one page that shows it: looked at, then swept for it everywhere after.
    shot("session-created")
    check_axe("session-created")
    check_console()
    STATE["more_canaries"].append(token)
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    api("POST", "/proxy/openai/v1/chat/completions", chat, token=token, expect=200)
    # Only the providers it names; nothing of the keys API.
    api("POST", "/proxy/anthropic/v1/messages",
        {"model": "claude-sonnet-4-20250514", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        token=token, expect=403)
    api("GET", "/api/v1/keys", token=token, expect=403)
    # The page shows what it spent against its cap.
    visit("/settings/sessions", "session-listed")
    row = browser().find_element(By.CSS_SELECTOR, "tr[data-session-id]")
    assert "agent workroom" in row.text and "1 of 2" in row.text, row.text
    assert token not in page_source(), "the token is shown once"
    mobile()
    visit("/settings/sessions", "session-listed-mobile")
    desktop()
    go("/settings/sessions")
    click_button("Revoke")
    wait_for("text=No active sessions")
    check_page("session-revoked")
    api("POST", "/proxy/openai/v1/chat/completions", chat, token=token, expect=401)


@needs("test_a_person_adds_tests_replaces_and_deletes_keys")
def test_every_admin_page_and_a_workspace_pause():
    # Back to the owner.
    click_button("Sign out")
    wait_for_path("/login")
    fill("email", ADMIN_EMAIL)
    fill("password", ADMIN_PASSWORD)
    click_button("Sign in")
    wait_for_path("/settings/api-keys")
    for path, name in [
        ("/admin/providers", "admin-providers"),
        ("/admin/settings", "admin-settings"),
        ("/admin/users", "admin-users"),
        ("/admin/workspaces", "admin-workspaces"),
        ("/admin/audit", "admin-audit"),
        ("/workspace/keys", "workspace-keys"),
    ]:
        visit(path, name)
        assert "Not allowed" not in page_text() and "Not found" not in page_text(), path
    # Dana's workspace paused: her own key stops working at once; restored: it works again.
    token = STATE["dana_token"]
    call = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    api("POST", "/proxy/openai/v1/chat/completions", call, token=token, expect=200)
    from selenium.webdriver.common.by import By

    def dana_row():
        go("/admin/workspaces")
        rows = [r for r in browser().find_elements(By.CSS_SELECTOR, "tbody tr") if "dana" in r.text or "host-user-1" in r.text]
        assert rows, f"dana's workspace is listed:\n{page_text()}"
        return rows[0]

    dana_row().find_element(By.XPATH, ".//button[normalize-space(.)='Pause']").click()
    wait_for("text=paused")
    check_page("admin-workspace-paused")
    status, answer = api("POST", "/proxy/openai/v1/chat/completions", call, token=token)
    assert status == 403 and answer["code"] == "workspace_inactive", (status, answer)
    dana_row().find_element(By.XPATH, ".//button[normalize-space(.)='Restore']").click()
    wait_for("text=active")
    api("POST", "/proxy/openai/v1/chat/completions", call, token=token, expect=200)


@needs("test_every_admin_page_and_a_workspace_pause")
def test_a_person_deletes_a_key_after_confirming():
    click_button("Sign out")
    wait_for_path("/login")
    link = jwt({"sub": "host-user-1", "email": "dana@example.com", "exp": int(time.time()) + 300})
    STATE["more_canaries"].append(link)
    go(f"/login/jwt?token={link}")
    wait_for_path("/settings/api-keys")
    from selenium.webdriver.common.by import By

    row_of("openai").find_element(By.XPATH, ".//a[contains(., 'Delete')]").click()
    wait_for("text=cannot be undone")
    check_page("key-delete-confirm")
    click_button("Delete key")
    wait_for("text=The key was deleted")
    assert not browser().find_elements(By.CSS_SELECTOR, "tr[data-provider='openai']")


@needs("test_the_wizard_claims_adds_keys_per_step_and_locks")
def test_single_sign_on_signs_a_person_in():
    click_button("Sign out")
    wait_for_path("/login")
    oidc_next_user(sub="sso-erin", email="erin@example.com")
    go("/settings/usage")
    wait_for_path("/login")
    check_page("login-with-sso")
    click_link("Sign in with Mock ID")
    # To the issuer (it approves at once), back to keygate's callback, then on to the
    # page asked for, signed in as a new user; the code has left the address bar.
    wait_for_path("/settings/usage", timeout=10)
    assert "erin@example.com" in page_text()
    assert "code=" not in browser().current_url
    check_page("sso-signed-in")


@needs("test_single_sign_on_signs_a_person_in")
def test_single_sign_on_refuses_an_unverified_email_with_a_readable_page():
    click_button("Sign out")
    wait_for_path("/login")
    oidc_next_user(sub="sso-fay", email="fay@example.com", email_verified=False)
    click_link("Sign in with Mock ID")
    wait_for("text=Email address not verified", timeout=10)
    assert "fay@example.com is not verified" in page_text()
    assert wait_for_path("/login/oidc/mock/callback")
    check_page("sso-refused-unverified")
    click_link("Back to sign-in")
    wait_for_path("/login")
    oidc_next_user()


if __name__ == "__main__":
    sys.exit(run_tests(globals(), sys.argv[1:]))
