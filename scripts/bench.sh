#!/usr/bin/env bash
# bench.sh BUILD: times sshchain and OpenSSH doing the same work on the lab, in the same run, and
# prints the figures and their ratios (also written to BUILD/bench.md). Both sides use key auth.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
lab=${SSHCHAIN_LAB_DIR:-/tmp/sshchain-lab}
N=${BENCH_N:-50}     # sessions for the single-hop figures
C=${BENCH_C:-100}    # concurrent sessions through two jumps
S=${BENCH_S:-20}     # sequential chains through two jumps
out=$build/bench.md
work=$(mktemp -d)
cleanup() {
  [ -f "$work/cm.cfg" ] && ssh -F "$work/cm.cfg" -O exit j1 >/dev/null 2>&1 || true
  [ -f "$work/cm.cfg" ] && ssh -F "$work/cm.cfg" -O exit j2 >/dev/null 2>&1 || true
  rm -rf "$work"
  scripts/lab.sh down >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM
scripts/lab.sh up

# measure CMD...: prints "wall cpu" (seconds; CPU = user+sys of the command and its children)
measure() {
  local tf=$work/time
  /usr/bin/time -o "$tf" -f '%e %U %S' "$@" >/dev/null 2>"$work/last.err" ||
    { echo "bench: failed: $* ($(tail -3 "$work/last.err"))" >&2; exit 1; }
  awk '{ printf "%.3f %.3f\n", $1, $2 + $3 }' "$tf"
}

# OpenSSH, with the lab's ssh_config; failures are counted in $work/fail (MaxStartups drops)
cfg=$lab/ssh_config
cp "$cfg" "$work/cm.cfg"
cat >> "$work/cm.cfg" <<CFG
Host j1 j2
  ControlMaster auto
  ControlPath $work/cm-%C
  ControlPersist 120
CFG
cat > "$work/ssh-run" <<'SH'
#!/usr/bin/env bash
# ssh-run MODE COUNT CONFIG HOST: COUNT `ssh HOST true`, one after the other or all at once
mode=$1 n=$2 cfg=$3 host=$4 failfile=$5
fails=0
if [ "$mode" = seq ]; then
  for _ in $(seq "$n"); do ssh -F "$cfg" -o BatchMode=yes "$host" true || fails=$((fails + 1)); done
else
  pids=()
  for _ in $(seq "$n"); do ssh -F "$cfg" -o BatchMode=yes "$host" true 2>/dev/null & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p" || fails=$((fails + 1)); done
fi
echo "$fails" > "$failfile"
exit 0
SH
chmod +x "$work/ssh-run"
fails() { cat "$work/fail"; }

row() { # label, sshchain "wall cpu", openssh "wall cpu", note
  read -r sw sc <<<"$2"; read -r ow oc <<<"$3"
  awk -v l="$1" -v sw="$sw" -v sc="$sc" -v ow="$ow" -v oc="$oc" -v note="$4" 'BEGIN {
    printf "| %s | %.2f s | %.2f s | %.2f | %.3f s | %.3f s | %.2f | %s |\n", l, sw, ow, (ow > 0 ? sw / ow : 0), sc, oc, (oc > 0 ? sc / oc : 0), note }'
}
sc() { measure "$build/sshlua" scripts/bench/connect.lua "$@"; }

[ "${BENCH_ONLY:-}" = forward ] || {
  echo "| work | sshchain wall | OpenSSH wall | wall ratio | sshchain CPU | OpenSSH CPU | CPU ratio | notes |"
  echo "|---|---|---|---|---|---|---|---|"
  a=$(sc seq "$N" j1:key); b=$(measure "$work/ssh-run" seq "$N" "$cfg" j1 "$work/fail")
  row "1 hop: connect+auth+\`exec true\`, $N in sequence" "$a" "$b" "ssh failures: $(fails)"
  a=$(sc par "$N" j1big:key); b=$(measure "$work/ssh-run" par "$N" "$cfg" j1big "$work/fail")
  row "1 hop: $N at once (MaxStartups raised)" "$a" "$b" "ssh failures: $(fails)"
  a=$(sc seq "$S" j1:key j2 t4:key); b=$(measure "$work/ssh-run" seq "$S" "$cfg" t4 "$work/fail")
  row "2 jumps: chain+\`exec true\`, $S in sequence, vs \`ssh -J\`" "$a" "$b" "ssh failures: $(fails)"
  ssh -F "$work/cm.cfg" -o BatchMode=yes j2 true # start the ControlMasters of j1 and j2
  b=$(measure "$work/ssh-run" seq "$S" "$work/cm.cfg" t4 "$work/fail")
  row "2 jumps, $S in sequence, vs \`ssh -J\` with ControlMaster on the jumps" "$a" "$b" "ssh failures: $(fails)"
  a=$(sc par "$C" j1:key j2 t4:key); b=$(measure "$work/ssh-run" par "$C" "$cfg" t4 "$work/fail")
  row "2 jumps: $C sessions at once (stock limits), vs $C \`ssh -J\`" "$a" "$b" "ssh failures: $(fails)/$C"
  b=$(measure "$work/ssh-run" par "$C" "$work/cm.cfg" t4 "$work/fail")
  row "2 jumps: $C at once, vs ControlMaster \`ssh -J\`" "$a" "$b" "ssh failures: $(fails)/$C"
} | tee "$out"

# ---- port forwarding through j1 -> j2 to t1: iperf3 throughput, connection rate, memory
ip netns exec scl-t1 pkill -x iperf3 || true
ip netns exec scl-t1 iperf3 -s -B 10.231.3.11 -p 5201 -D --pidfile "$work/iperf.pid"
ip netns exec scl-t1 python3 -c "
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('10.231.3.11', 9000)); s.listen(8)
buf = b'x' * 1048576
while True:
    c, _ = s.accept()
    try:
        for i in range(1024): c.sendall(buf)
    except OSError: pass
    c.close()
" & src_pid=$!
ip netns exec scl-t1 python3 scripts/bench/fastsrv.py 10.231.3.11 8081 & fast_pid=$!
fpid=
stop_fwd() { if [ -n "$fpid" ]; then kill "$fpid" 2>/dev/null; wait "$fpid" 2>/dev/null || true; fi; fpid=; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
start_fwd() { # sshchain|openssh TO_HOST TO_PORT -> sets port, fpid
  if [ "$1" = sshchain ]; then
    rm -f "$work/port"
    "$build/sshlua" scripts/bench/forward.lua "$work/port" "$2" "$3" & fpid=$!
    for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.1; done
    port=$(cat "$work/port")
  else
    port=$((20000 + RANDOM % 10000))
    ssh -F "$cfg" -o BatchMode=yes -N -L "$port:$2:$3" j2 & fpid=$!
  fi
  wait_port "$port"
}
iperf() { # port [-R] -> Mbit/s (retried: the iperf3 server takes one test at a time)
  local r
  for _ in 1 2 3 4 5; do
    r=$(iperf3 -c 127.0.0.1 -p "$1" -t 4 -J ${2:-} | python3 -c 'import json,sys; print("%.0f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e6))' 2>/dev/null) &&
      [ -n "$r" ] && { echo "$r"; return; }
    sleep 1
  done
  echo 0
}
declare -A up down rate rss
for who in sshchain openssh; do
  start_fwd $who 10.231.3.11 5201
  up[$who]=$(iperf "$port"); down[$who]=$(iperf "$port" -R)
  stop_fwd
  start_fwd $who 10.231.3.11 8081
  rate[$who]=$(python3 scripts/bench/tcpclient.py rate 127.0.0.1 "$port" 1000 8)
  stop_fwd
  start_fwd $who 10.231.3.11 9000
  python3 scripts/bench/tcpclient.py slowread 127.0.0.1 "$port" 1073741824 200e6 >/dev/null
  rss[$who]=$(awk '/VmHWM/ {print $2}' /proc/"$fpid"/status)
  for c in $(pgrep -P "$fpid"); do rss[$who]=$(( ${rss[$who]} + $(awk '/VmHWM/ {print $2}' /proc/$c/status) )); done
  stop_fwd
done
kill "$src_pid" "$fast_pid" 2>/dev/null || true
ip netns exec scl-t1 pkill -x iperf3 || true
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
{
  echo
  echo '| forwarding through j1 -> j2 (one local forward) | sshchain | OpenSSH `ssh -J -L` | ratio |'
  echo "|---|---|---|---|"
  echo "| throughput, one connection, upload (iperf3) | ${up[sshchain]} Mbit/s | ${up[openssh]} Mbit/s | $(ratio ${up[sshchain]} ${up[openssh]}) |"
  echo "| throughput, one connection, download (iperf3 -R) | ${down[sshchain]} Mbit/s | ${down[openssh]} Mbit/s | $(ratio ${down[sshchain]} ${down[openssh]}) |"
  echo "| connections per second (short HTTP/1.0 GETs, 8 clients) | ${rate[sshchain]} | ${rate[openssh]} | $(ratio ${rate[sshchain]} ${rate[openssh]}) |"
  echo "| peak RSS, 1 GiB to a reader at 200 MB/s | $((${rss[sshchain]} / 1024)) MiB | $((${rss[openssh]} / 1024)) MiB (3 ssh processes) | $(ratio ${rss[sshchain]} ${rss[openssh]}) |"
} | tee -a "$out"
echo "(wall/CPU ratio < 1: sshchain is faster / uses less client CPU; $(date -u +%F), $(nproc) cores)" | tee -a "$out"
