#!/usr/bin/env bash
# Instructions per verdict for each message of `cargo bench --bench verdict`
# (clean, leaking, gzip, rfc2047), counted by valgrind's cachegrind on the
# bench's fixed loop (CIDGUARD_VERDICT_LOOP=<kind>:<n> runs n verdicts of
# one message and nothing else). Unlike wall time, the count does not depend
# on what else the machine is doing, so a before/after comparison holds on a
# busy machine. The set-up (building the 1,000-number policy) is counted
# once with n = 0 and taken away.
#
# Run: bash benches/verdict-instructions.sh [n]   (needs valgrind; n defaults to 2000)
# VERDICT_BENCH=path/to/verdict-<hash> counts an already built bench
# executable instead (an older build kept aside, to compare).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
n=${1:-2000}
bench=${VERDICT_BENCH:-$(cargo bench --bench verdict --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -n1)}
[ -x "$bench" ] || { echo "no bench executable found" >&2; exit 1; }
count() {
    CIDGUARD_VERDICT_LOOP=$1 valgrind --tool=cachegrind --cache-sim=no \
        --cachegrind-out-file=/dev/null "$bench" 2>&1 |
        sed -n 's/.*I *refs: *\([0-9,]*\).*/\1/p' | tr -d ,
}
for kind in clean leaking gzip rfc2047; do
    base=$(count "$kind:0")
    total=$(count "$kind:$n")
    echo "$kind: $(((total - base) / n)) instructions per verdict"
done
