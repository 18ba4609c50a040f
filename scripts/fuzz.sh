#!/usr/bin/env bash
# Runs every property of tests/properties.rs (proptest) for a bounded time each, with fresh
# random seeds round after round, and prints what it found.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET_FILTER...]
#
#   SECONDS_PER_TARGET  default 60
#   TARGET_FILTER       substrings of property test names (default: all of them)
#   PROPTEST_CASES      cases per round (default 256); the deadline is checked between rounds
#   FUZZ_RELEASE=1      build optimised (a separate, much longer first build)
#
# Logs go to target/fuzz/<test>.log. A failure shows proptest's minimal failing input, and
# proptest records its seed in tests/proptest-regressions/ so the suite tries it first from
# then on. Exit status: 0 when nothing was found, 1 when a property failed or crashed.
set -uo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
[[ $# -gt 0 ]] && shift
case $seconds in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET] [TARGET_FILTER...]" >&2; exit 2 ;;
esac
profile=()
[[ ${FUZZ_RELEASE:-0} == 1 ]] && profile=(--release)

cargo=(cargo test --locked "${profile[@]}" --test main)
echo "fuzz: building the test binary" >&2
"${cargo[@]}" --no-run -q || exit 1

mapfile -t all < <("${cargo[@]}" -q -- --list properties:: 2>/dev/null | sed -n 's/^\(properties::[a-z0-9_]*\): test$/\1/p')
targets=()
for t in "${all[@]}"; do
  if [[ $# -eq 0 ]]; then targets+=("$t"); continue; fi
  for f in "$@"; do [[ $t == *"$f"* ]] && { targets+=("$t"); break; }; done
done
[[ ${#targets[@]} -gt 0 ]] || { echo "fuzz: no property matches: $*" >&2; exit 2; }

mkdir -p target/fuzz
found=0
for t in "${targets[@]}"; do
  log=target/fuzz/${t#properties::}.log
  echo "fuzz: $t for ${seconds}s (log: $log)" >&2
  start=$(date +%s)
  EVENTYARD_FUZZ_SECONDS=$seconds PROPTEST_CASES=${PROPTEST_CASES:-256} RUST_BACKTRACE=0 \
    "${cargo[@]}" -q -- --exact "$t" --nocapture >"$log" 2>&1
  status=$?
  took=$(($(date +%s) - start))
  if [[ $status -eq 0 ]]; then
    echo "  ok ($took s): $(grep -o '[0-9]* cases passed' "$log" | tail -1)"
  else
    found=1
    echo "  FOUND ($took s, exit $status):"
    if grep -q 'minimal failing input' "$log"; then
      # The panic message: the reason, then proptest's minimal input.
      sed -n "/property \`.*\` failed/,/^note: run with/p" "$log" | grep -v '^note: run with' | sed 's/^/    /' | head -80
    else
      # No proptest report: the process died (a stack overflow, an abort).
      tail -20 "$log" | sed 's/^/    /'
    fi
  fi
done
exit $found
