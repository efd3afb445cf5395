#!/usr/bin/env bash
# bench.sh BUILD: times sshchain and OpenSSH doing the same work on the lab, in the same run, and
# prints the figures and their ratios (also written to BUILD/bench.md).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
lab=${SSHCHAIN_LAB_DIR:-/tmp/sshchain-lab}
N=${BENCH_N:-50}
out=$build/bench.md
trap 'scripts/lab.sh down >/dev/null 2>&1 || true' EXIT INT TERM
scripts/lab.sh up

# wall seconds, user+sys CPU seconds of a command (and its children)
measure() {
  local tf
  tf=$(mktemp)
  /usr/bin/time -o "$tf" -f '%e %U %S' "$@" >/dev/null 2>"$build/bench-last.err" ||
    { echo "bench: failed: $* (see $build/bench-last.err)" >&2; rm -f "$tf"; exit 1; }
  awk '{ printf "%.3f %.3f\n", $1, $2 + $3 }' "$tf"
  rm -f "$tf"
}
ssh_cfg=$lab/ssh_config
ssh_opts=(-F "$ssh_cfg" -o BatchMode=yes)
ssh_seq() { for _ in $(seq "$1"); do ssh "${ssh_opts[@]}" "$2" true; done; }
ssh_par() { for _ in $(seq "$1"); do ssh "${ssh_opts[@]}" "$2" true & done; wait; }
export -f ssh_seq ssh_par; export ssh_cfg

row() { # label, sshchain "wall cpu", openssh "wall cpu"
  read -r sw sc <<<"$2"; read -r ow oc <<<"$3"
  awk -v l="$1" -v sw="$sw" -v sc="$sc" -v ow="$ow" -v oc="$oc" 'BEGIN {
    printf "| %s | %.2f s | %.2f s | %.2f | %.3f s | %.3f s | %.2f |\n", l, sw, ow, (ow > 0 ? sw / ow : 0), sc, oc, (oc > 0 ? sc / oc : 0) }'
}

{
  echo "| work | sshchain wall | OpenSSH wall | ratio | sshchain CPU | OpenSSH CPU | CPU ratio |"
  echo "|---|---|---|---|---|---|---|"
  a=$(measure "$build/sshlua" scripts/bench/connect.lua seq "$N" j1:key)
  b=$(measure bash -c "ssh_seq $N j1 ; true" )
  row "connect+auth+exec true, 1 hop, $N sequential" "$a" "$b"
  a=$(measure "$build/sshlua" scripts/bench/connect.lua par "$N" j1big:key)
  b=$(measure bash -c "ssh_par $N j1big")
  row "connect+auth+exec true, 1 hop, $N at once" "$a" "$b"
} | tee "$out"
echo "(ratio < 1: sshchain is faster / uses less CPU; N=$N; $(date -u +%F), $(nproc) cores)" | tee -a "$out"
