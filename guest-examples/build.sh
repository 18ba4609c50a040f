#!/usr/bin/env bash
# Builds the Rust example plugins for wasm32-wasip2 and refreshes the prebuilt copies the
# router embeds (`component = "builtin:<name>"`), with the hash of the sources they were
# built from. A test fails when the sources change and this was not run.
#
#     bash guest-examples/build.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2
(cd guest-examples/rust && cargo build --release --target wasm32-wasip2)
for crate in cleanup_plan generator metrics echo priority_filter; do
    cp "guest-examples/rust/target/wasm32-wasip2/release/$crate.wasm" "guest-examples/prebuilt/$crate.wasm"
done
bash guest-examples/sources-hash.sh > guest-examples/prebuilt/SOURCES.sha256
echo "prebuilt plugins refreshed: $(cat guest-examples/prebuilt/SOURCES.sha256)"
