"""Browser tests of keygate's server-rendered pages, in headless Chromium against one
keygate (fresh data dir) and keygate-mock. The tests run in file order and share that
one instance, building on each other (the setup wizard first, then sign-in, keys, ...);
mark a test that needs an earlier one with @needs("test_name").

Run by scripts/browser-test.sh (which installs Chromium, Selenium and axe-core):
    scripts/browser-test.sh                         # every test
    scripts/browser-test.sh fresh_start             # only tests whose names contain that
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    axe,
    check_console,
    current_path,
    go,
    run_tests,
    shot,
    start_browser,
    start_stack,
    wait_for_path,
)

# A provider key the mock accepts; pages must never show it (see canary_sweep).
OPENAI_KEY = "sk-proj-browserCANARY000000000000000001"


def test_stack_and_browser_start():
    """keygate and the mock start, Chromium opens /healthz, screenshots and axe work."""
    start_stack(valid_keys=[OPENAI_KEY])
    start_browser()
    assert '"status":"ok"' in go("/healthz").page_source.replace(" ", ""), "no {status: ok} on /healthz"
    path = shot("healthz")
    assert path.stat().st_size > 1000, f"{path} is too small to be a screenshot"
    assert isinstance(axe(), list)
    check_console()


# EXPECTED TO FAIL until the web pages land (crates/keygate-server/src/pages/): a fresh
# keygate has no administrator yet, so every page leads to the setup wizard.
def test_fresh_start_leads_to_setup():
    for path in ("/", "/settings/api-keys"):
        go(path)
        wait_for_path("/setup", timeout=5)
        assert current_path().startswith("/setup"), f"{path} ended at {current_path()}"
    shot("setup-from-fresh-start")
    check_console()


if __name__ == "__main__":
    sys.exit(run_tests(globals(), sys.argv[1:]))
