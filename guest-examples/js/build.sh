#!/usr/bin/env bash
# Builds the JavaScript example plugins into Wasm components with componentize-js, installed
# from npm (the pinned version in package-lock.json) next to them; idempotent:
#
#     bash guest-examples/js/build.sh          # -> guest-examples/js/target/<name>.wasm
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
command -v node >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs npm; }
[ -d node_modules/@bytecodealliance/componentize-js ] || npm ci --silent --no-audit --no-fund
# Rebuild only when a source or the WIT changed.
if [ -f target/echo.wasm ] && [ -z "$(find echo build.mjs ../../wit -newer target/echo.wasm -type f | head -1)" ]; then
    exit 0
fi
node build.mjs
