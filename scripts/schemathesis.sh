#!/usr/bin/env bash
# Runs schemathesis (PyPI 4.32.5, installed once into target/schemathesis-venv) with every
# check and every phase, stateful included, against a router this script starts on a free
# port with a fresh data directory, and stops it afterwards. Settings, each with its reason:
# scripts/schemathesis.toml. Exit status: schemathesis's (0 = nothing found).
#
#   bash scripts/schemathesis.sh                     # the full run
#   bash scripts/schemathesis.sh --max-examples 5    # extra arguments go to `schemathesis run`
#
# EVENTYARD_BIN: the binary to run (default: target/release/eventyard if built, else
# target/debug/eventyard, built when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}

venv=$target/schemathesis-venv
if ! "$venv/bin/python" -c "import schemathesis" 2>/dev/null; then
    python3 -m venv --help >/dev/null 2>&1 && python3 -c "import ensurepip" 2>/dev/null \
        || { apt-get update -qq && apt-get install -y -qq python3-venv; }
    rm -rf "$venv" && python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==4.32.5"
fi

bin=${EVENTYARD_BIN:-}
if [ -z "$bin" ]; then
    if [ -x "$target/release/eventyard" ]; then bin=$target/release/eventyard; else bin=$target/debug/eventyard; fi
    [ -x "$bin" ] || cargo build --locked --bin eventyard
fi
bin=$(realpath "$bin")

data=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
token=schemathesis-admin-token-$RANDOM$RANDOM
# The embedded default config (its plugins answer some RPC types), with a known admin token.
{ cat src/default.toml; printf '\n[auth]\nadmin_token = "%s"\n' "$token"; } > "$data/eventyard.toml"
(cd "$data" && RUST_LOG=warn exec "$bin" serve --config eventyard.toml --listen "127.0.0.1:$port" >"$data/router.log" 2>&1) &
router=$!
trap 'kill $router 2>/dev/null; wait $router 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done

"$venv/bin/schemathesis" --config-file scripts/schemathesis.toml run "http://127.0.0.1:$port/openapi.json" \
    -H "Authorization: Bearer $token" --checks all --request-timeout 10 --no-color "$@"
