#!/usr/bin/env bash
# Browser tests of keygate's web pages: headless Chromium, driven by Selenium, against
# keygate (SQLite, a fresh data dir) and keygate-mock on 127.0.0.1, with axe-core
# accessibility checks (tests/browser/test_pages.py; helpers in tests/browser/harness.py).
#
# Installs what it needs: Debian's chromium and chromium-driver (apt-get), Selenium in
# target/browser-venv (PyPI), axe-core in target/browser-node (npm). When one cannot be
# installed it prints "SKIPPED (browser tests): ..." and exits 0 locally; with CI=true
# it fails. Prints "browser: N passed, N failed, 0 skipped" (scripts/test.sh adds it up).
#
#   scripts/browser-test.sh                    # every test
#   scripts/browser-test.sh setup keys         # only tests whose names contain "setup" or "keys"
#   KEYGATE_BROWSER_SKIP_BUILD=1 scripts/browser-test.sh   # use the binaries already in target/debug
#
# Screenshots: target/browser-screenshots/; logs (keygate, mock, chromedriver): target/browser-logs/.
set -euo pipefail
cd "$(dirname "$0")/.."

SELENIUM='selenium>=4.20,<5'
AXE_VERSION=4.10.3
venv=target/browser-venv
node_dir=target/browser-node
mkdir -p target

skip() {
  if [ "${CI:-}" = "true" ]; then echo "FATAL (browser tests): $1" >&2; exit 1; fi
  echo "SKIPPED (browser tests): $1"
  exit 0
}

# (a) Chromium and its WebDriver, from Debian.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || skip "chromium/chromium-driver missing and no root or sudo to install them"
    sudo=(sudo -n)
  fi
  echo "installing chromium and chromium-driver (apt-get; log: target/browser-apt.log)"
  if ! { "${sudo[@]}" apt-get update \
      && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver; \
      } >target/browser-apt.log 2>&1; then
    tail -n 5 target/browser-apt.log >&2 || true
    skip "could not install chromium chromium-driver with apt-get (see target/browser-apt.log)"
  fi
fi

# (b) Selenium, in a virtual environment of its own.
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import selenium' 2>/dev/null; then
  python3 -m venv "$venv" || skip "python3 -m venv failed"
  if ! "$venv/bin/pip" install --quiet --disable-pip-version-check "$SELENIUM"; then
    skip "could not install $SELENIUM from PyPI"
  fi
fi

# (c) axe-core, an exact version, from the npm registry.
axe_pkg="$node_dir/node_modules/axe-core/package.json"
if ! grep -q "\"version\": \"$AXE_VERSION\"" "$axe_pkg" 2>/dev/null; then
  command -v npm >/dev/null || skip "npm is missing (needed for axe-core)"
  if ! npm install --prefix "$node_dir" "axe-core@$AXE_VERSION" --no-audit --no-fund --silent; then
    skip "could not install axe-core@$AXE_VERSION from npm"
  fi
fi

# (d) keygate and keygate-mock.
if [ "${KEYGATE_BROWSER_SKIP_BUILD:-}" != "1" ]; then
  cargo build --quiet --locked -p keygate -p keygate-mock
fi

# (e) The tests. Their last line is `tests: N passed, N failed, N skipped`.
out=$(mktemp)
trap 'rm -f "$out"' EXIT
set +e
"$venv/bin/python" -u tests/browser/test_pages.py "$@" 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
set -e
summary=$(grep -E '^tests: [0-9]+ passed, [0-9]+ failed' "$out" | tail -n1 || true)
if [ -n "$summary" ]; then
  echo "browser: ${summary#tests: }"
else
  echo "browser: 0 passed, 1 failed, 0 skipped (the test runner ended without a summary, status $status)"
  [ "$status" -ne 0 ] || status=1
fi
exit "$status"
