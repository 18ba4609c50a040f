#!/usr/bin/env bash
# Builds the Python example plugins into Wasm components with componentize-py, installed
# from PyPI into a venv next to them (idempotent):
#
#     bash guest-examples/python/build.sh      # -> guest-examples/python/target/<name>.wasm
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
wit="$here/../../wit"
venv="$here/target/venv"
mkdir -p "$here/target"
if ! "$venv/bin/componentize-py" --version 2>/dev/null | grep -q "0.25.1"; then
    python3 -c "import ensurepip" 2>/dev/null || { apt-get update -qq && apt-get install -y -qq python3-venv; }
    rm -rf "$venv" && python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check componentize-py==0.25.1
fi
# name:world of each example
for spec in idem-state-filter:filter; do
    name="${spec%%:*}" world="${spec##*:}"
    out="$here/target/${name//-/_}.wasm"
    # Rebuild only when the source or the WIT changed.
    if [ -f "$out" ] && [ -z "$(find "$here/$name" "$wit" -newer "$out" -type f | head -1)" ]; then
        continue
    fi
    (cd "$here/$name" && "$venv/bin/componentize-py" --wit-path "$wit" --world "$world" componentize app -o "$out")
done
