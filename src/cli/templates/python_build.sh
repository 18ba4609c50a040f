#!/usr/bin/env bash
# Builds {{name}}.wasm (a WebAssembly component for Eventyard) with componentize-py, installed
# from PyPI into .venv (or the one on PATH).
set -euo pipefail
cd "$(dirname "$0")"
if command -v componentize-py >/dev/null && componentize-py --version | grep -q 0.25.1; then
    cpy=componentize-py
else
    [ -x .venv/bin/componentize-py ] || { python3 -m venv .venv && .venv/bin/pip install --quiet componentize-py==0.25.1; }
    cpy=.venv/bin/componentize-py
fi
"$cpy" --wit-path wit --world {{world}} componentize app -o {{name}}.wasm
echo "built {{name}}.wasm"
