#!/bin/sh
# Seed each fuzz target's corpus with the project's real messages: the
# captured INVITEs, the RFC 4475 torture messages and the fuzz regressions.
# Run from the repository root: sh fuzz/seed-corpus.sh
set -eu
strip() { awk 'started || !/^#/ { started = 1; print }' "$1"; }
for target in frame_stream parse judge; do
    dir="fuzz/corpus/$target"
    mkdir -p "$dir"
    for f in tests/fixtures/invites/*.sip tests/fixtures/captures/*.sip \
             tests/fixtures/rfc4475/*.dat tests/fixtures/fuzz/*.sip; do
        [ -e "$f" ] || continue
        # The fixtures' leading "# key: value" lines are not part of the
        # message (awk may add a final newline: harmless in a corpus).
        name="$(basename "$f")"
        if [ "$target" = frame_stream ]; then
            # The first byte sets the chunk size for the chunked feed.
            { printf '\007'; strip "$f"; } > "$dir/$name"
        else
            strip "$f" > "$dir/$name"
        fi
    done
done
echo "seeded fuzz/corpus/{frame_stream,parse,judge}"
