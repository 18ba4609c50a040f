#!/usr/bin/env bash
# Prints one SHA-256 over everything the Rust example plugins are built from: the WIT
# package and every file of guest-examples/rust except target/ and the READMEs. The test
# `prebuilt_plugins_match_their_sources` computes the same hash in Rust.
set -euo pipefail
cd "$(dirname "$0")/.."
{ echo wit/eventyard.wit; find guest-examples/rust -path guest-examples/rust/target -prune -o -type f ! -name '*.md' -print; } \
    | LC_ALL=C sort | while read -r f; do sha256sum "$f"; done | sha256sum | cut -d' ' -f1
