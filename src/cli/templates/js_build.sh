#!/usr/bin/env bash
# Builds {{name}}.wasm (a WebAssembly component for Eventyard) with componentize-js from npm.
set -euo pipefail
cd "$(dirname "$0")"
[ -d node_modules/@bytecodealliance/componentize-js ] || npm install --silent --no-audit --no-fund
node build.mjs
