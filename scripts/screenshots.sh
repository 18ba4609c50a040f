#!/usr/bin/env bash
# The README's screenshots of the dashboard (docs/screenshots/<page>.png), made by the same
# tooling as its browser test: a router on a free port, headless Chromium through
# chromedriver, driven by the ignored test `dashboard::screenshots` (tests/dashboard.rs).
# Run it after changing the dashboard: `bash scripts/screenshots.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromedriver >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
fi
export SCREENSHOTS_DIR="${SCREENSHOTS_DIR:-$PWD/docs/screenshots}"
cargo test --locked --test main -- --ignored --exact dashboard::screenshots
ls -l "$SCREENSHOTS_DIR"
