#!/usr/bin/env bash
# Builds the C example plugins into Wasm components (idempotent):
#
#     bash guest-examples/c/build.sh      # -> guest-examples/c/target/<name>.wasm
#
# Toolchain: clang + wasi-libc from Debian (installed with apt when missing), and tool/ (a
# small Rust binary: wit-bindgen's C generator for the bindings, wit-component to turn the
# core module into a component, with the WASI preview1 adapter for libc's I/O).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
wit="$here/../../wit"
if ! command -v clang >/dev/null || [ ! -d /usr/lib/wasm32-wasi ] || ! ls /usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq clang lld wasi-libc libclang-rt-14-dev-wasm32 >/dev/null
fi
(cd "$here/tool" && cargo build --release --locked --quiet --target-dir "$here/tool/target")
tool="$here/tool/target/release/c-guest-tool"
mkdir -p "$here/target"
# name:world of each example
for spec in priority-filter:filter; do
    name="${spec%%:*}" world="${spec##*:}"
    out="$here/target/${name//-/_}.wasm"
    if [ -f "$out" ] && [ -z "$(find "$here/$name" "$wit" "$tool" -newer "$out" -type f | head -1)" ]; then
        continue
    fi
    gen="$here/target/bindings/$world"
    "$tool" bindings "$wit" "$world" "$gen"
    clang --target=wasm32-wasi -mexec-model=reactor -O2 -I"$gen" -o "$here/target/${name//-/_}.core.wasm" \
        "$gen/$world.c" "$here/$name"/*.c "$gen/${world}_component_type.o"
    "$tool" component "$here/target/${name//-/_}.core.wasm" "$out"
    echo "built $out ($(stat -c %s "$out") bytes)"
done
