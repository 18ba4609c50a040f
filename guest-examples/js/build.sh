#!/usr/bin/env bash
# Builds the JavaScript example plugins into Wasm components with componentize-js, installed
# from npm (pinned in package.json) next to them; idempotent:
#
#     bash guest-examples/js/build.sh          # -> guest-examples/js/target/<name>.wasm
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
command -v node >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs npm; }
# `npm install` with no lock file (see .npmrc): npm 11 writes locks that miss a package
# componentize-js needs.
[ -d node_modules/@bytecodealliance/componentize-js ] || npm install --no-audit --no-fund --loglevel=error
# Rebuild only when a source or the WIT changed.
if [ -f target/echo.wasm ] && [ -z "$(find echo build.mjs ../../wit -newer target/echo.wasm -type f | head -1)" ]; then
    exit 0
fi
node build.mjs
