#!/usr/bin/env bash
# Idle cost of the daemon: resident memory and CPU time of `cidguard run`
# with 50 lines configured and no check due, over a minute.
#
#   cargo build --release && bash benches/idle-rss.sh [BINARY] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target/release/cidguard}"
secs="${2:-60}"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT

{
    printf '[organisation]\nname = "Eastside Women'"'"'s Refuge"\nregion = "AU"\nnumbers = ["+61 3 7010 0142"]\n\n'
    printf '[endpoint]\nnumbers = ["+61 3 9999 0000"]\n\n'
    printf '[daemon]\nstate_dir = "%s/state"\ntime_zone = "Australia/Sydney"\n' "$dir"
    for i in $(seq 0 49); do
        printf '\n[[line]]\nname = "line-%02d"\nexpect = "withheld"\n' "$i"
        printf '[line.account]\nregistrar = "sip:127.0.0.1:%d"\nusername = "%d"\npassword = "x"\n' $((5100 + i % 5)) $((200 + i))
    done
} > "$dir/cidguard.toml"

env -u NOTIFY_SOCKET -u STATE_DIRECTORY "$bin" run --config "$dir/cidguard.toml" 2> "$dir/log" &
pid=$!
sleep 5
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
t0=$(ticks)
sleep "$secs"
t1=$(ticks)
rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
threads=$(awk '/^Threads/ {print $2}' "/proc/$pid/status")
kill -TERM "$pid"
wait "$pid"
echo "idle with 50 lines: RSS ${rss} kB, ${threads} threads, $((t1 - t0)) CPU ticks ($(getconf CLK_TCK)/s) in ${secs} s"
