#!/usr/bin/env bash
# Screenshots of every console wizard step (and the list, detail and sign-in pages), taken by
# the browser tests: `make console-screenshots`. They land in $HOOKSTREAM_SCREENSHOTS_DIR
# (default var/console-screenshots/). Starts its own broker unless HOOKSTREAM_KAFKA_BOOTSTRAP
# names one, like the test suite.
set -euo pipefail
cd "$(dirname "$0")/../.."
export HOOKSTREAM_SCREENSHOTS_DIR="${HOOKSTREAM_SCREENSHOTS_DIR:-$PWD/var/console-screenshots}"
bash tests/support/ensure_chromium.sh
.venv/bin/python -c "import playwright" 2>/dev/null || {
  echo "playwright is missing from .venv: run make install (it is in the test extra)" >&2; exit 1; }
.venv/bin/pytest -q -p no:cacheprovider tests/console
echo "screenshots: $HOOKSTREAM_SCREENSHOTS_DIR"
ls "$HOOKSTREAM_SCREENSHOTS_DIR"
