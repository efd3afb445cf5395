#!/usr/bin/env bash
# demo.sh BUILD: the four jobs of sshchain on the built-in lab, as a user would run them with the
# bundled recipes: starts the lab, runs them through the jump hosts, always stops the lab.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
lab=${SSHCHAIN_LAB_DIR:-/tmp/sshchain-lab}
work=$(mktemp -d)
fwd_pid=
cleanup() {
  [ -n "$fwd_pid" ] && kill "$fwd_pid" 2>/dev/null
  rm -rf "$work"
  scripts/lab.sh down >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM

bold=; dim=; off=
if [ -t 1 ]; then bold=$'\e[1m'; dim=$'\e[2m'; off=$'\e[0m'; fi
say() { printf '\n%s== %s%s\n' "$bold" "$*" "$off"; }
note() { printf '%s   %s%s\n' "$dim" "$*" "$off"; }
# quoted(ARG): ARG as a shell would need it typed
quoted() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then printf '%s' "$1"; else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
# run CMD...: shows the command as typed (with short paths), then runs it
run() {
  local shown="" a
  for a in "$@"; do shown+="${shown:+ }$(quoted "$a")"; done
  shown=${shown//"$lab"/lab}; shown=${shown//"$build/sshlua"/sshlua}; shown=${shown//"$work"/.}
  printf '%s$ %s%s\n' "$bold" "$shown" "$off"
  "$@"
}

scripts/lab.sh up
inv=$lab/inventory.lua
sshlua=$build/sshlua
# the inventory keeps secrets out of the file: env "SCL_J1_PASSWORD", ...
. "$lab/inventory.env"

say "The lab: OpenSSH servers in network namespaces, reachable only through two jump hosts"
note "client -> j1 (password) -> j2 (key) -> t1..t4 (passphrase key, keyboard-interactive, keys)"
note "                                     -> n01..n16, a small cluster"
note "Every hop is a direct-tcpip channel pumped inside one process: no ssh binary runs here."
run "$sshlua" -r tree -i "$inv" targets 'n0[1-3]'

say "1. Batch commands: every node of the cluster, and the targets, at once"
run "$sshlua" -r exec -n -i "$inv" nodes targets -- 'echo "$(whoami) load $(cut -d" " -f1 /proc/loadavg)"'

say "2. Load: 200 users log into t4 through the jump hosts and run 3 commands each"
note "(one connection to each jump host carries all 200 sessions; logins are paced under MaxStartups)"
run "$sshlua" -r stress -i "$inv" --users 200 --repeat 3 --barrier t4 -- 'cat /proc/loadavg >/dev/null'

say "3. Files: upload, server to server, download; SHA-256 checked on both ends"
head -c $((128 * 1024 * 1024)) /dev/urandom >"$work/payload.bin"
run "$sshlua" -r copy -i "$inv" --verify "$work/payload.bin" t1:payload.bin
run "$sshlua" -r copy -i "$inv" --verify t1:payload.bin t4:payload.bin
run "$sshlua" -r copy -i "$inv" --verify t4:payload.bin "$work/back.bin"
cmp -s "$work/payload.bin" "$work/back.bin" && note "back.bin is byte for byte the payload"
head -c $((16 * 1024 * 1024)) "$work/payload.bin" >"$work/update.bin"
run "$sshlua" -r copy -i "$inv" --to nodes -- "$work/update.bin" /home/sclnode/
"$sshlua" -r exec -n -i "$inv" -q t1 t4 'n01' -- rm -f payload.bin update.bin >/dev/null

say "4. Port forwarding: the web interfaces of two targets, on local ports"
printf '%s$ sshlua -r forward -i lab/inventory.lua t1:8080 t2:8080 &%s\n' "$bold" "$off"
"$sshlua" -r forward -i "$inv" t1:8080 t2:8080 >"$work/fwd.out" 2>"$work/fwd.err" &
fwd_pid=$!
for _ in $(seq 100); do grep -q serving "$work/fwd.err" 2>/dev/null && break; sleep 0.1; done
cat "$work/fwd.out"
for url in $(grep -o 'http://127.0.0.1:[0-9]*/' "$work/fwd.out"); do
  printf '%s$ curl %sindex.html%s\n' "$bold" "$url" "$off"
  curl -s --max-time 5 "${url}index.html"
done
kill -INT "$fwd_pid"
wait "$fwd_pid" || true
fwd_pid=
tail -1 "$work/fwd.err"

say "Done. The lab goes down now; README.md shows the API, the recipes and the figures."
