"""The browser-test harness: starts keygate-mock and keygate (fresh data dir, every
provider pointed at the mock) and a headless Chromium driven by Selenium, and offers the
small helpers page tests are written with. Run by scripts/browser-test.sh through
tests/browser/test_pages.py; loopback only.

One stack and one browser per process, started on first use and stopped at exit (also
on failure, Ctrl-C or SIGTERM). The helpers act on that browser:

    go("/login"); fill("email", "a@example.com"); click_button("Sign in")
    wait_for("#keys") or wait_for("Welcome back"); current_path()
    shot("login"); check_axe("login"); check_console(); canary_sweep(page_source(), [KEY])
    api("POST", "/api/v1/keys", {"provider": "openai", "secret": KEY}, token=TOKEN)
    mock_configure(valid_keys=[KEY]); mock_requests(); mock_clear_requests()
    oidc_next_user(email="a@example.com", email_verified=False)   # the mock issuer's next sign-in

Environment: KEYGATE_BROWSER_BIN_DIR (default target/debug) holds keygate and
keygate-mock; KEYGATE_BROWSER_START_TIMEOUT (seconds, default 60) bounds start-up.
Logs land in target/browser-logs/, screenshots in target/browser-screenshots/.
"""

import atexit
import base64
import binascii
import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("KEYGATE_BROWSER_BIN_DIR", ROOT / "target" / "debug"))
KEYGATE_BIN = BIN_DIR / "keygate"
MOCK_BIN = BIN_DIR / "keygate-mock"
PROVIDERS_TOML = ROOT / "crates" / "keygate-core" / "providers.toml"
AXE_JS = ROOT / "target" / "browser-node" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = ROOT / "target" / "browser-screenshots"
LOGS = ROOT / "target" / "browser-logs"
START_TIMEOUT = float(os.environ.get("KEYGATE_BROWSER_START_TIMEOUT", "60"))

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DESKTOP = (1280, 900)
MOBILE = (390, 844)

# Never let Selenium Manager look for a driver or browser on the network.
os.environ.setdefault("SE_OFFLINE", "true")

# urllib without any proxy from the environment: every call here is to 127.0.0.1.
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ---------------------------------------------------------------------------
# The stack: keygate-mock and keygate
# ---------------------------------------------------------------------------


def free_port():
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def provider_ids():
    """The provider ids of the built-in catalog (crates/keygate-core/providers.toml)."""
    ids = re.findall(r'^id\s*=\s*"([^"]+)"', PROVIDERS_TOML.read_text(), flags=re.MULTILINE)
    if not ids:
        raise RuntimeError(f"no provider ids found in {PROVIDERS_TOML}")
    return ids


class Stack:
    """keygate-mock and keygate on free loopback ports, keygate on a fresh data dir."""

    def __init__(self, valid_keys=(), oauth_clients=(), extra_env=None, oidc_client=None):
        self.valid_keys = list(valid_keys)
        self.oauth_clients = list(oauth_clients)  # "client_id:client_secret"
        # "client_id:client_secret": keygate signs in with the mock's OpenID Connect issuer
        # ("Mock ID", people at example.com), through a config file written here.
        self.oidc_client = oidc_client
        self.extra_env = dict(extra_env or {})
        self.procs = []
        self.workdir = None
        self.env = None
        self.keygate_url = None
        self.mock_url = None
        self.keygate_log = LOGS / "keygate.log"
        self.mock_log = LOGS / "mock.log"

    def start(self):
        for binary in (KEYGATE_BIN, MOCK_BIN):
            if not os.access(binary, os.X_OK):
                raise RuntimeError(f"{binary} is missing: build it (cargo build -p keygate -p keygate-mock)")
        shutil.rmtree(LOGS, ignore_errors=True)
        LOGS.mkdir(parents=True)
        self.workdir = Path(tempfile.mkdtemp(prefix="keygate-browser-"))

        mock_port = free_port()
        self.mock_url = f"http://127.0.0.1:{mock_port}"
        args = [str(MOCK_BIN), "--listen", f"127.0.0.1:{mock_port}"]
        for key in self.valid_keys:
            args += ["--valid-key", key]
        for client in self.oauth_clients:
            args += ["--oauth-client", client]
        if self.oidc_client:
            args += ["--oidc-client", self.oidc_client]
        self._spawn(args, self.mock_log, os.environ.copy())

        # Nothing from the developer's own KEYGATE_* settings (a database URL, a key file).
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYGATE_")}
        env["KEYGATE_DATA_DIR"] = str(self.workdir / "data")
        env["KEYGATE_LOG"] = "info"
        for pid in provider_ids():
            env[f"KEYGATE_PROVIDER_{pid.upper()}_BASE_URL"] = self.mock_url
        keygen = subprocess.run([str(KEYGATE_BIN), "keygen"], env=env, capture_output=True, text=True, check=True)
        env["KEYGATE_MASTER_KEY"] = keygen.stdout.strip().splitlines()[-1].strip()
        port = free_port()
        env["KEYGATE_LISTEN"] = f"127.0.0.1:{port}"
        self.keygate_url = f"http://127.0.0.1:{port}"
        if self.oidc_client:
            client_id, client_secret = self.oidc_client.split(":", 1)
            config = self.workdir / "keygate.toml"
            config.write_text(
                f'public_url = "{self.keygate_url}"\n\n[[oidc.providers]]\nid = "mock"\nname = "Mock ID"\n'
                f'issuer = "{self.mock_url}/oidc"\nclient_id = "{client_id}"\nallowed_domains = ["example.com"]\n'
            )
            env["KEYGATE_CONFIG"] = str(config)
            env["KEYGATE_OIDC_MOCK_CLIENT_SECRET"] = client_secret
        env.update(self.extra_env)
        self.env = env

        self._wait_until_up(self.mock_url + "/__mock/config", self.procs[0], self.mock_log)
        self._spawn([str(KEYGATE_BIN), "serve"], self.keygate_log, env)
        self._wait_until_up(self.keygate_url + "/readyz", self.procs[1], self.keygate_log)
        return self

    def check_alive(self):
        """Raises, with the log's tail, if keygate or the mock has exited."""
        for proc, log_path in zip(self.procs, (self.mock_log, self.keygate_log)):
            if proc.poll() is not None:
                raise RuntimeError(f"{Path(proc.args[0]).name} has exited ({proc.returncode}):\n{tail(log_path, 10)}")

    def _spawn(self, args, log_path, env):
        log = open(log_path, "ab")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        log.close()
        self.procs.append(proc)
        return proc

    def _wait_until_up(self, url, proc, log_path):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}:\n{tail(log_path)}")
            try:
                with _http.open(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{url} not ready within {START_TIMEOUT:.0f}s:\n{tail(log_path)}")

    def stop(self):
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


def tail(path, lines=30):
    """The last lines of a log file, for error messages."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path})"


_stack = None
_stack_error = None


def start_stack(valid_keys=(), oauth_clients=(), extra_env=None, oidc_client=None):
    """Starts the stack once per process; later calls return the running one (or raise
    again why it could not start)."""
    global _stack, _stack_error
    if _stack_error is not None:
        raise RuntimeError(f"the stack did not start: {_stack_error}")
    if _stack is None:
        stack = Stack(valid_keys, oauth_clients, extra_env, oidc_client)
        try:
            stack.start()
        except BaseException as e:
            stack.stop()
            _stack_error = e
            raise
        _stack = stack
    return _stack


def stack():
    """The running stack, started with defaults if it is not yet."""
    return start_stack()


def url(path):
    """An absolute keygate URL for `path` ("/login")."""
    return stack().keygate_url + path


def keygate_log():
    """keygate's whole log so far (stdout and stderr, KEYGATE_LOG=info)."""
    return stack().keygate_log.read_text(errors="replace")


def setup_code(timeout=10):
    """The one-time setup code keygate logs at a fresh start (`... setup code: CODE ...`),
    from a text or JSON log line; polls the log until `timeout` seconds."""
    pattern = re.compile(r"setup code:\s*\"?([^\s\"',;\\]+)")
    deadline = time.monotonic() + timeout
    while True:
        for line in keygate_log().splitlines():
            if "setup code:" in line:
                match = pattern.search(line)
                if match:
                    return match.group(1).rstrip(".")
        if time.monotonic() >= deadline:
            raise AssertionError(f"no 'setup code:' line in keygate's log within {timeout}s:\n{tail(stack().keygate_log)}")
        time.sleep(0.1)


def keygate_cli(*args, stdin=None):
    """Runs `keygate ARGS` against the stack's data dir and master key, e.g.
    keygate_cli("admin", "create", "--email", E, stdin=PASSWORD); returns stdout, raises on failure."""
    env = dict(stack().env)
    env["KEYGATE_LOG"] = "warn"
    done = subprocess.run([str(KEYGATE_BIN), *args], env=env, input=stdin, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"keygate {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


# ---------------------------------------------------------------------------
# HTTP: keygate's JSON API and the mock's control endpoints
# ---------------------------------------------------------------------------


def http(method, full_url, body=None, token=None, headers=None):
    """One HTTP call; returns (status, parsed JSON or text or None). Never raises on 4xx/5xx."""
    data = None
    request_headers = dict(headers or {})
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request_headers.setdefault("content-type", "application/json")
    if token:
        request_headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(full_url, data=data, method=method, headers=request_headers)
    try:
        with _http.open(request, timeout=30) as response:
            status, raw, ctype = response.status, response.read(), response.headers.get("content-type", "")
    except urllib.error.HTTPError as e:
        status, raw, ctype = e.code, e.read(), e.headers.get("content-type", "")
    if not raw:
        return status, None
    if "json" in ctype:
        return status, json.loads(raw)
    return status, raw.decode(errors="replace")


def api(method, path, body=None, token=None, expect=None):
    """keygate's API: api("POST", "/api/v1/keys", {...}, token=T) -> (status, json).
    With `expect` (a status or a tuple of them), raises unless the status is one of them."""
    status, answer = http(method, url(path), body, token)
    if expect is not None and status not in (expect if isinstance(expect, tuple) else (expect,)):
        raise AssertionError(f"{method} {path}: expected {expect}, got {status}: {answer}")
    return status, answer


def mock(method, what, body=None):
    """The mock's control endpoints, /__mock/<what>:
    GET config (the whole MockConfig), PUT config (replaces it whole; unknown fields are
    refused, missing ones take defaults), GET stats ({"served": N}), GET requests (every
    provider request recorded, oldest first), DELETE requests. Anything else: 404."""
    status, answer = http(method, stack().mock_url + "/__mock/" + what, body)
    if status >= 300:
        raise AssertionError(f"mock {method} {what}: {status} {answer}")
    return answer


def oidc_next_user(sub="sso-user-1", email="sso@example.com", email_verified=True):
    """Who the mock's OpenID Connect issuer signs in next (it approves at once)."""
    body = {"sub": sub, "email": email, "email_verified": email_verified}
    status, answer = http("POST", stack().mock_url + "/__oidc/next-user", body)
    if status >= 300:
        raise AssertionError(f"oidc next-user: {status} {answer}")


def mock_config():
    return mock("GET", "config")


def mock_configure(**changes):
    """Changes some MockConfig fields, keeping the rest: valid_keys, oauth_clients
    ([{"client_id", "client_secret"}]), token_ttl_secs, latency_ms, chunk_interval_ms,
    chunks, input_tokens, output_tokens, fault, fault_times, record. A fault is e.g.
    {"kind": "status", "status": 429}, {"kind": "delay", "ms": 500},
    {"kind": "reset_mid_stream", "after_chunks": 2}, {"kind": "malformed_sse"},
    {"kind": "echo", "encoding": "base64", "status": 401}."""
    config = mock_config()
    config.update(changes)
    mock("PUT", "config", config)
    return config


def mock_accept_key(key):
    """Makes the mock accept `key` too (for live validation of a key pasted in a page)."""
    keys = mock_config()["valid_keys"]
    if key not in keys:
        mock_configure(valid_keys=keys + [key])


def mock_requests():
    """Recorded requests: [{method, path, query, headers: [[name, value]], credential,
    credential_via, body}], oldest first."""
    return mock("GET", "requests")


def mock_clear_requests():
    mock("DELETE", "requests")


def mock_stats():
    return mock("GET", "stats")


# ---------------------------------------------------------------------------
# The browser
# ---------------------------------------------------------------------------

CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

_driver = None
_profile_dir = None


def start_browser():
    """Starts headless Chromium once per process (1280x900, console logging on)."""
    global _driver, _profile_dir
    if _driver is not None:
        return _driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    LOGS.mkdir(parents=True, exist_ok=True)
    _profile_dir = tempfile.mkdtemp(prefix="keygate-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={_profile_dir}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(CHROMEDRIVER, service_args=["--log-level=WARNING"], log_output=str(LOGS / "chromedriver.log"))
    _driver = webdriver.Chrome(service=service, options=options)
    _driver.set_window_size(*DESKTOP)
    _driver.set_script_timeout(30)
    return _driver


def browser():
    """The running WebDriver, started if it is not yet."""
    return start_browser()


def desktop():
    """Back to the 1280x900 window, without phone emulation."""
    driver = browser()
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    driver.set_window_size(*DESKTOP)


def mobile():
    """A phone: a 390x844 viewport, emulated as mobile (meta viewport honoured);
    desktop() switches back."""
    driver = browser()
    driver.set_window_size(*MOBILE)
    width, height = MOBILE
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": True},
    )


def go(path):
    """Opens a keygate path ("/settings/api-keys") or an absolute URL."""
    driver = browser()
    if "://" in path or path.startswith("data:"):
        driver.get(path)
    else:
        target = url(path)
        stack().check_alive()
        driver.get(target)
    return driver


def current_path():
    return urllib.parse.urlsplit(browser().current_url).path


def page_source():
    return browser().page_source


def page_text():
    """The visible text of the page."""
    from selenium.webdriver.common.by import By

    return browser().find_element(By.TAG_NAME, "body").text


_shot_counter = 0


def shot(name):
    """Saves target/browser-screenshots/NN-<name>.png (the directory is emptied by the
    first shot of the run); returns its path."""
    global _shot_counter
    if _shot_counter == 0:
        shutil.rmtree(SCREENSHOTS, ignore_errors=True)
        SCREENSHOTS.mkdir(parents=True)
    _shot_counter += 1
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "shot"
    path = SCREENSHOTS / f"{_shot_counter:02d}-{safe}.png"
    if not browser().save_screenshot(str(path)):
        raise RuntimeError(f"screenshot {path} was not written")
    return path


def _xpath_literal(text):
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    return "concat(" + ", \"'\", ".join(f"'{part}'" for part in text.split("'")) + ")"


def fill(name, value):
    """Fills the form field named `name`: text-like inputs and textareas get `value`
    typed (after clearing), selects pick the option with that value or visible text,
    checkboxes and radios are set to bool(value) (a radio: the one with that value)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = browser()
    fields = driver.find_elements(By.NAME, name)
    if not fields:
        raise AssertionError(f"no form field named {name!r} on {current_path()}")
    field = fields[0]
    kind = (field.get_attribute("type") or "").lower()
    if field.tag_name == "select":
        select = Select(field)
        try:
            select.select_by_value(str(value))
        except Exception:  # noqa: BLE001 - fall back to the visible text
            select.select_by_visible_text(str(value))
    elif kind == "radio":
        match = [f for f in fields if f.get_attribute("value") == str(value)]
        if not match:
            raise AssertionError(f"no radio {name!r} with value {value!r}")
        match[0].click()
    elif kind == "checkbox":
        if field.is_selected() != bool(value):
            field.click()
    else:
        field.clear()
        field.send_keys(str(value))
    return field


def click_button(text):
    """Clicks the button (or submit input) whose text or value is `text`, else one
    whose text contains it."""
    from selenium.webdriver.common.by import By

    literal = _xpath_literal(text)
    for xpath in (
        f"//button[normalize-space(.)={literal}] | //input[(@type='submit' or @type='button') and @value={literal}]",
        f"//button[contains(normalize-space(.), {literal})] | //input[(@type='submit' or @type='button') and contains(@value, {literal})]",
    ):
        found = [e for e in browser().find_elements(By.XPATH, xpath) if e.is_displayed()]
        if found:
            found[0].click()
            return found[0]
    raise AssertionError(f"no button {text!r} on {current_path()}")


def wait_for(target, timeout=5):
    """Waits until `target` shows: "css=SELECTOR" or "text=TEXT" explicitly, or else
    either a displayed element matching it as a CSS selector or the page's visible text
    containing it. Returns the element (or True for text); raises on timeout."""
    from selenium.common.exceptions import InvalidSelectorException, WebDriverException
    from selenium.webdriver.common.by import By

    mode, wanted = "any", target
    if target.startswith("css="):
        mode, wanted = "css", target[4:]
    elif target.startswith("text="):
        mode, wanted = "text", target[5:]
    deadline = time.monotonic() + timeout
    while True:
        try:
            if mode in ("any", "css"):
                try:
                    shown = [e for e in browser().find_elements(By.CSS_SELECTOR, wanted) if e.is_displayed()]
                    if shown:
                        return shown[0]
                except InvalidSelectorException:
                    if mode == "css":
                        raise
            if mode in ("any", "text") and wanted in page_text():
                return True
        except InvalidSelectorException:
            raise
        except WebDriverException:
            pass  # the page is changing under us; try again
        if time.monotonic() >= deadline:
            raise AssertionError(f"{target!r} did not appear within {timeout}s on {browser().current_url}")
        time.sleep(0.1)


def wait_for_path(prefix, timeout=5):
    """Waits until the browser's URL path starts with `prefix`; returns the path."""
    deadline = time.monotonic() + timeout
    while not current_path().startswith(prefix):
        if time.monotonic() >= deadline:
            raise AssertionError(f"expected a path starting {prefix!r}, at {browser().current_url}")
        time.sleep(0.1)
    return current_path()


# ---------------------------------------------------------------------------
# Checks: accessibility, console, secrets in the page
# ---------------------------------------------------------------------------


def axe(driver=None, ignore=()):
    """Runs axe-core on the current page; returns its serious and critical violations as
    [{id, impact, help, helpUrl, targets: [[selector, ...], ...]}], less rule ids in `ignore`."""
    driver = driver or browser()
    if not AXE_JS.exists():
        raise RuntimeError(f"{AXE_JS} is missing: scripts/browser-test.sh installs axe-core")
    driver.execute_script(AXE_JS.read_text())
    result = driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        axe.run(document, {resultTypes: ['violations']})
          .then(r => done(r.violations.map(v => ({
            id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
            targets: v.nodes.map(n => n.target)}))))
          .catch(e => done({error: String(e)}));
        """
    )
    if isinstance(result, dict) and "error" in result:
        raise RuntimeError(f"axe.run failed: {result['error']}")
    return [v for v in result if v["impact"] in ("serious", "critical") and v["id"] not in ignore]


def check_axe(page_name, driver=None, ignore=()):
    """Raises, listing each rule, what it asks and where, if axe finds serious or
    critical violations on the current page."""
    violations = axe(driver, ignore)
    if violations:
        lines = [f"{page_name}: {len(violations)} serious/critical accessibility violation(s):"]
        for v in violations:
            where = ", ".join(" ".join(t) if isinstance(t, list) else str(t) for t in v["targets"][:3])
            lines.append(f"  - {v['id']} ({v['impact']}): {v['help']} at {where}")
        raise AssertionError("\n".join(lines))


def check_console(driver=None, ignore=("favicon.ico",)):
    """Fails on browser console entries that are CSP violations ('Content Security
    Policy', 'Refused to') or SEVERE errors. A failed load of the page itself (a 4xx page
    shown on purpose) and messages containing a string in `ignore` are let through.
    Reading the log empties it; returns the entries read."""
    driver = driver or browser()
    entries = driver.get_log("browser")
    page = driver.current_url
    bad = []
    for entry in entries:
        message = entry.get("message", "")
        if any(s in message for s in ignore):
            continue
        csp = "Content Security Policy" in message or "Refused to" in message
        own_status = entry.get("source") == "network" and message.startswith(page + " ")
        if csp or (entry.get("level") == "SEVERE" and not own_status):
            bad.append(f"  - [{entry.get('level')}/{entry.get('source')}] {message}")
    if bad:
        raise AssertionError(f"browser console on {page}:\n" + "\n".join(bad))
    return entries


def _base64_forms(data, alphabet_url):
    """Substrings that any base64 encoding of a text containing `data` must contain,
    one per alignment (0, 1, 2 bytes before it)."""
    forms = []
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + data).decode()
        start = 4 if shift else 0
        end = 4 * ((shift + len(data)) // 3)
        core = encoded[start:end]
        if alphabet_url:
            core = core.replace("+", "-").replace("/", "_")
        if len(core) >= 8:
            forms.append(core)
    return forms


def canary_forms(canary):
    """Every form of `canary` canary_sweep looks for, as {form name: [strings]}."""
    data = canary.encode()
    return {
        "raw": [canary],
        "html-escaped": [html.escape(canary)],
        "percent-encoded": [urllib.parse.quote(canary, safe=""), urllib.parse.quote_plus(canary, safe="")],
        "base64": _base64_forms(data, alphabet_url=False),
        "base64url": _base64_forms(data, alphabet_url=True),
        "hex": [binascii.hexlify(data).decode()],
        "json-\\u-escaped": ["".join(f"\\u{ord(c):04x}" for c in canary)],
    }


def canary_sweep(text, canaries):
    """Fails if any canary (a secret that must never reach a page) appears in `text`,
    raw, HTML-escaped, percent-encoded, base64, base64url, hex or JSON \\u-escaped (hex
    and \\u compared case-insensitively)."""
    found = []
    lowered = text.lower()
    for canary in canaries:
        seen = set()
        for form, needles in canary_forms(canary).items():
            for needle in [n for n in needles if n not in seen]:
                seen.add(needle)
                case_free = form in ("hex", "json-\\u-escaped")
                if (needle.lower() in lowered) if case_free else (needle in text):
                    found.append(f"{canary[:6]}… as {form}")
                    break
    if found:
        raise AssertionError("secret canary in the page: " + ", ".join(found))


# ---------------------------------------------------------------------------
# Shutdown and the test runner
# ---------------------------------------------------------------------------


def stop_all():
    """Quits the browser and stops the stack; safe to call twice."""
    global _driver, _stack, _profile_dir
    if _driver is not None:
        try:
            _driver.quit()
        except Exception:  # noqa: BLE001 - shutting down regardless
            pass
        _driver = None
    if _profile_dir:
        shutil.rmtree(_profile_dir, ignore_errors=True)
        _profile_dir = None
    if _stack is not None:
        _stack.stop()
        _stack = None


atexit.register(stop_all)


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


signal.signal(signal.SIGTERM, _exit_on_sigterm)


def needs(*names):
    """Marks a test as building on earlier ones: if any of them ran and failed, this one
    is reported failed without running."""

    def mark(fn):
        fn.needs = names
        return fn

    return mark


def run_tests(namespace, selected=()):
    """Runs the test_* functions of `namespace` (a module's globals()) in file order, or
    only those whose names contain one of `selected`; prints PASS/FAIL per test and
    `tests: N passed, N failed, 0 skipped`; returns the exit status (1 on any failure)."""
    tests = [(name, fn) for name, fn in namespace.items() if name.startswith("test_") and callable(fn)]
    if selected:
        tests = [(name, fn) for name, fn in tests if any(s in name for s in selected)]
        if not tests:
            print(f"no test matches {' '.join(selected)}")
            return 2
    outcome = {}
    for name, fn in tests:
        failed_needs = [n for n in getattr(fn, "needs", ()) if outcome.get(n) is False]
        started = time.monotonic()
        if failed_needs:
            outcome[name] = False
            print(f"FAIL {name}: not run, needs {', '.join(failed_needs)}", flush=True)
            continue
        try:
            fn()
            outcome[name] = True
            print(f"PASS {name} ({time.monotonic() - started:.1f}s)", flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure and go on
            outcome[name] = False
            print(f"FAIL {name} ({time.monotonic() - started:.1f}s): {type(e).__name__}: {e}", flush=True)
            # Where in the tests it failed (not the WebDriver's native stack).
            frames = [f for f in traceback.extract_tb(e.__traceback__) if "tests/browser" in f.filename]
            for frame in frames:
                print(f"     {Path(frame.filename).name}:{frame.lineno} in {frame.name}: {frame.line}")
            if _driver is not None:
                try:
                    print(f"     at {_driver.current_url}; screenshot {shot('FAIL-' + name)}")
                except Exception:  # noqa: BLE001 - the browser may be gone
                    pass
    passed = sum(1 for ok in outcome.values() if ok)
    failed = len(outcome) - passed
    if failed:
        print(f"logs: {LOGS}  screenshots: {SCREENSHOTS}")
    print(f"tests: {passed} passed, {failed} failed, 0 skipped", flush=True)
    sys.stdout.flush()
    return 1 if failed else 0
