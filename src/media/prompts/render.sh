#!/usr/bin/env bash
# Renders the self-test's default prompts from prompts.txt into <name>.wav
# next to this script: eSpeak NG's English (Great Britain) voice, resampled
# to 8 kHz mono 16-bit PCM (what G.711 carries), leading and trailing
# silence trimmed, peaks normalised. Run it after changing a text and
# commit the WAVs: neither the build nor the tests need eSpeak NG or SoX.
#
#   apt-get install espeak-ng sox
#   src/media/prompts/render.sh
#
# Deterministic for a given eSpeak NG and SoX version: no dither (-D), and
# SoX's repeatable mode (-R) for anything random.
set -euo pipefail
cd "$(dirname "$0")"

for tool in espeak-ng sox; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "render.sh: $tool is missing (Debian packages espeak-ng and sox)" >&2
        exit 1
    fi
done

# The voice, and a speaking rate a little slower than the default (175
# words a minute): callers hear it through a phone line, once.
voice=en-gb
speed=150

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

n=0
while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in '' | '#'*) continue ;; esac
    name=${line%%[[:space:]]*}
    text=${line#"$name"}
    text=${text#"${text%%[![:space:]]*}"}
    if [ -z "$text" ]; then
        echo "render.sh: no text for $name" >&2
        exit 1
    fi
    espeak-ng -v "$voice" -s "$speed" -w "$tmp/$name.wav" -- "$text"
    # silence 1 0.01 0.1%: cut everything before the first 10 ms above
    # -60 dB; reversed, the same at the end. norm -3: peaks at -3 dBFS,
    # leaving headroom for G.711 and the phone's own processing.
    sox -D -R "$tmp/$name.wav" -r 8000 -c 1 -b 16 -e signed-integer "$name.wav" \
        silence 1 0.01 0.1% reverse silence 1 0.01 0.1% reverse norm -3 rate -v 8000
    n=$((n + 1))
done < prompts.txt
echo "render.sh: $n prompts rendered"
