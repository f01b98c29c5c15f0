#!/usr/bin/env bash
# Instructions per verdict for the two cases of `cargo bench --bench verdict`,
# counted by valgrind's callgrind: unlike the wall-clock figures, the count
# does not depend on what else the machine is doing, so a before/after
# comparison holds on a busy machine.
#
# Run: bash benches/verdict-instructions.sh   (needs valgrind)
# VERDICT_BENCH=path/to/verdict-<hash> counts an already built bench
# executable instead (an older build kept aside, to compare).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
bench=${VERDICT_BENCH:-$(cargo bench --bench verdict --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -n1)}
[ -x "$bench" ] || { echo "no bench executable found" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for case in clean_invite_1000_numbers leaking_invite_1000_numbers; do
    valgrind --tool=callgrind --callgrind-out-file="$out/$case.cg" \
        "$bench" --bench --noplot --warm-up-time 1 --measurement-time 2 "$case" \
        >"$out/$case.log" 2>&1
    # The benchmark loop's calls into judge(): inclusive instructions and count.
    line=$(callgrind_annotate --inclusive=yes --tree=caller "$out/$case.cg" |
        grep -E '< .*benches/verdict\.rs:criterion::bencher::Bencher<M>::iter \(' | head -n1)
    ir=$(echo "$line" | awk '{gsub(",", "", $1); print $1}')
    calls=$(echo "$line" | sed -n 's/.*(\([0-9,]*\)x).*/\1/p' | tr -d ,)
    echo "$case: $((ir / calls)) instructions per verdict ($calls verdicts)"
done
