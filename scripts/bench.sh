#!/usr/bin/env bash
# bench.sh BUILD: times sshchain and OpenSSH doing the same work on the lab, in the same run, and
# prints the figures and their ratios (also written to BUILD/bench.md). Both sides use key auth.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
lab=${SSHCHAIN_LAB_DIR:-/tmp/sshchain-lab}
N=${BENCH_N:-50}     # sessions for the single-hop figures
C=${BENCH_C:-100}    # concurrent sessions through two jumps
K=${BENCH_K:-1000}   # concurrent sessions through two jumps, sshchain alone (CPU per session)
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

# measure CMD...: prints "wall cpu syscalls busy" (seconds; the client's system calls, counted
# only with MEASURE_SYSCALLS=1 when perf can, else 0; the machine's busy CPU seconds, all
# processes, from /proc/stat). CPU is every process the command started, waited for or not
# (perf stat's task-clock: ssh -J's ProxyJump processes are not always waited for, so getrusage
# would miss them); without a working perf, user+sys of waited children. System calls are
# counted in a run of their own: the tracepoint costs the traced process time on each one
# (measured: a 512 MB SCP download, 1.8 M system calls, 0.94-1.00 s of CPU untraced against
# 1.02-1.79 s traced), which would charge the tools that make many of them.
if perf stat -e task-clock -x, -o /dev/null true 2>/dev/null; then HAVE_PERF=1; else HAVE_PERF=0; fi
HAVE_SC=0
if [ "$HAVE_PERF" = 1 ] && perf stat -e raw_syscalls:sys_enter -x, -o /dev/null true 2>/dev/null; then
  HAVE_SC=1
fi
busy_jiffies() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
measure() {
  local tf=$work/time pf=$work/perf b0 b1 hz
  hz=$(getconf CLK_TCK)
  b0=$(busy_jiffies)
  if [ "$HAVE_PERF" = 1 ]; then
    local ev=task-clock
    [ "${MEASURE_SYSCALLS:-0}" = 1 ] && [ "$HAVE_SC" = 1 ] && ev=task-clock,raw_syscalls:sys_enter
    perf stat -e "$ev" -x, -o "$pf" -- /usr/bin/time -o "$tf" -f '%e %U %S' "$@" >/dev/null 2>"$work/last.err" ||
      { echo "bench: failed: $* ($(tail -3 "$work/last.err"))" >&2; exit 1; }
    b1=$(busy_jiffies)
    awk -F, -v wall="$(cut -d' ' -f1 "$tf")" -v busy="$(( b1 - b0 ))" -v hz="$hz" '
      $3 == "task-clock" { cpu = $1 / 1000 } $3 == "raw_syscalls:sys_enter" { sc = $1 }
      END { printf "%.3f %.3f %d %.2f\n", wall, cpu, sc, busy / hz }' "$pf"
  else
    /usr/bin/time -o "$tf" -f '%e %U %S' "$@" >/dev/null 2>"$work/last.err" ||
      { echo "bench: failed: $* ($(tail -3 "$work/last.err"))" >&2; exit 1; }
    b1=$(busy_jiffies)
    awk -v busy="$(( b1 - b0 ))" -v hz="$hz" '{ printf "%.3f %.3f 0 %.2f\n", $1, $2 + $3, busy / hz }' "$tf"
  fi
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
  read -r sw sc _ <<<"$2"; read -r ow oc _ <<<"$3"
  awk -v l="$1" -v sw="$sw" -v sc="$sc" -v ow="$ow" -v oc="$oc" -v note="$4" 'BEGIN {
    printf "| %s | %.2f s | %.2f s | %.2f | %.3f s | %.3f s | %.2f | %s |\n", l, sw, ow, (ow > 0 ? sw / ow : 0), sc, oc, (oc > 0 ? sc / oc : 0), note }'
}
sc() { measure "$build/sshlua" scripts/bench/connect.lua "$@"; }

want() { [ -z "${BENCH_ONLY:-}" ] || [ "${BENCH_ONLY}" = "$1" ]; }   # BENCH_ONLY=connect|forward|transfer|recipes|soak

want connect && {
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
  # reuse across runs: $S separate sshlua processes in sequence, directly and through a mux
  # (sshlua -r mux) that holds j1 and j2, against the same ControlMaster runs
  cat > "$work/sc-runs" <<SH
#!/usr/bin/env bash
for _ in \$(seq "\$1"); do BENCH_CONTROL=\$2 "$build/sshlua" scripts/bench/connect.lua seq 1 j1:key j2 t4:key || exit 1; done
SH
  chmod +x "$work/sc-runs"
  a=$(measure "$work/sc-runs" "$S" "")
  row "2 jumps: $S \`sshlua\` runs in sequence (a process each), vs ControlMaster \`ssh -J\`" "$a" "$b" "ssh failures: $(fails)"
  (. "$lab/inventory.env" && "$build/sshlua" -r mux start -i "$lab/inventory.lua" --persist 120 j2 2>/dev/null)
  a=$(measure "$work/sc-runs" "$S" 1)
  "$build/sshlua" -r mux stop -i "$lab/inventory.lua" j2 2>/dev/null || true
  row "2 jumps: $S \`sshlua\` runs through \`sshlua -r mux\` holding j1 and j2, vs ControlMaster \`ssh -J\`" "$a" "$b" "ssh failures: $(fails)"
  a=$(sc par "$C" j1:key j2 t4:key); b=$(measure "$work/ssh-run" par "$C" "$cfg" t4 "$work/fail")
  row "2 jumps: $C sessions at once (stock limits), vs $C \`ssh -J\`" "$a" "$b" "ssh failures: $(fails)/$C"
  b=$(measure "$work/ssh-run" par "$C" "$work/cm.cfg" t4 "$work/fail")
  row "2 jumps: $C at once, vs ControlMaster \`ssh -J\`" "$a" "$b" "ssh failures: $(fails)/$C"
  echo
  # scale: $K chains at once through the same two jumps (no OpenSSH row: $K \`ssh -J\` are
  # 3x$K processes that MaxStartups drops), client CPU per session, medians of 3
  echo "| 2 jumps: $K chains + \`exec true\` at once | wall | client CPU | client CPU per session | client syscalls per session |"
  echo "|---|---|---|---|---|"
  ksc=$(MEASURE_SYSCALLS=1 sc par "$K" j1:key j2 t4:key | cut -d' ' -f3)
  for _ in 1 2 3; do sc par "$K" j1:key j2 t4:key; done | sort -n -k2 | sed -n 2p |
    awk -v k="$K" -v sc="$ksc" '{ printf "| sshchain (median of 3 by CPU; system calls: a 4th run) | %.2f s | %.3f s | %.2f ms | %d |\n", $1, $2, 1000 * $2 / k, sc / k }'
  echo
  # where a chain's time goes, hop by hop: with the IGNORE nudge (the default) and without it
  # (SSHCHAIN_NO_NUDGE=1), so a TCP stall (~40 ms: Nagle against a delayed ACK) shows in one column
  echo "| 2-jump chain + \`exec true\`, medians of $S (ms) | j1 TCP | j1 kex | j1 auth | j2 channel | j2 kex | j2 auth | t4 channel | t4 kex | t4 auth | exec | total |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  for off in 0 1; do
    SSHCHAIN_NO_NUDGE=$off "$build/sshlua" scripts/bench/latency.lua "$S" |
      awk -v label="$([ "$off" = 0 ] && echo "sshchain" || echo "sshchain without the nudge (SSHCHAIN_NO_NUDGE=1)")" '{
        printf "| %s |", label; for (i = 2; i <= NF; i += 2) printf " %.1f |", $i; printf "\n" }'
  done
} | tee "$out"

# ---- port forwarding through j1 -> j2 to t1: iperf3 throughput, connection rate, memory
want forward && {
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
  # medians of 3 runs each way: single iperf3 runs vary by half on a shared 2-core machine
  up[$who]=$(for _ in 1 2 3; do iperf "$port"; done | sort -n | sed -n 2p)
  down[$who]=$(for _ in 1 2 3; do iperf "$port" -R; done | sort -n | sed -n 2p)
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
  echo "| throughput, one connection, upload (iperf3, median of 3) | ${up[sshchain]} Mbit/s | ${up[openssh]} Mbit/s | $(ratio ${up[sshchain]} ${up[openssh]}) |"
  echo "| throughput, one connection, download (iperf3 -R, median of 3) | ${down[sshchain]} Mbit/s | ${down[openssh]} Mbit/s | $(ratio ${down[sshchain]} ${down[openssh]}) |"
  echo "| connections per second (short HTTP/1.0 GETs, 8 clients) | ${rate[sshchain]} | ${rate[openssh]} | $(ratio ${rate[sshchain]} ${rate[openssh]}) |"
  echo "| peak RSS, 1 GiB to a reader at 200 MB/s | $((${rss[sshchain]} / 1024)) MiB | $((${rss[openssh]} / 1024)) MiB (3 ssh processes) | $(ratio ${rss[sshchain]} ${rss[openssh]}) |"
} | tee -a "$out"
}

# ---- file transfer through j1 -> j2 -> t4: MB each way, medians of RUNS runs
want transfer && {
MB=${BENCH_XFER_MB:-512}
RUNS=${BENCH_RUNS:-3}
xdir=$work/xfer
mkdir -p "$xdir"
head -c "${MB}M" /dev/urandom >"$xdir/src.bin"
remote=/home/sclt4/bench-xfer.bin
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
# Before each upload the target is removed (and the disk synced), untimed: every tool then makes
# a new file on t4. Otherwise a writer in place (scp -t, OpenSSH's sftp) reuses the old file's
# cached pages while sshchain's SFTP sink, which writes a temporary file and renames it over the
# old one, pays for new pages and for freeing the old file's: measured here, 1.4 s against 2.3 s
# for 512 MB with the same protocol work.
# Before each download the local copy is removed the same way, so that every tool writes a new
# file: the rename over the last one (or scp's truncation of it) frees its cached pages before
# it returns (measured: a 512 MB SCP download in 1.13-1.15 s to a new file, 1.39-1.44 s over the
# last one, 4 alternated runs).
fresh_remote() {
  if [ "$1" = up ]; then ip netns exec scl-t4 rm -f "$remote"; else rm -f "$xdir/down.bin"; fi
  sync
}
runs() { # n up|down CMD... -> "wall cpu syscalls busy": medians of n runs; syscalls of one more
  local n=$1 dir=$2 sc; shift 2
  for _ in $(seq "$n"); do fresh_remote "$dir"; measure "$@"; done >"$work/runs"
  fresh_remote "$dir"
  sc=$(MEASURE_SYSCALLS=1 measure "$@" | cut -d' ' -f3)
  echo "$(cut -d' ' -f1 "$work/runs" | median) $(cut -d' ' -f2 "$work/runs" | median)" \
    "$sc $(cut -d' ' -f4 "$work/runs" | median)"
}
declare -A xw xc xs xb
xfer() { # key n up|down CMD...: records medians in xw[key-dir], xc, xs (syscalls), xb (busy)
  local key=$1 n=$2 dir=$3; shift 3
  read -r "xw[$key-$dir]" "xc[$key-$dir]" "xs[$key-$dir]" "xb[$key-$dir]" <<<"$(runs "$n" "$dir" "$@")"
}

# TCP congestion control in the lab's namespaces, which inherit this machine's default (bbr
# here). BBR paces each sender at the bandwidth it estimates; on veth links, where the only
# limit is the CPUs, the estimate falls short, the senders wait on their pacing timers and the
# machine stays half idle: measured, 256 MB through j1 -> j2 -> t4 in 1.26-1.58 s with bbr
# against 0.88-0.91 s with reno (3 alternated runs each, same client CPU). The transfers run
# with reno on the lab's side (the client's own sockets keep this machine's default), so that
# they are bound by work, as the bound below assumes; one pair of rows repeats SCP with the
# inherited default, for comparison.
lab_cc() { # NAME: every lab namespace sends with NAME from now on (new connections)
  local ns
  for ns in $(ip netns list | awk '/^scl-/ { print $1 }'); do
    ip netns exec "$ns" sysctl -qw net.ipv4.tcp_congestion_control="$1" 2>/dev/null || return 1
  done
}
cc_default=$(sysctl -n net.ipv4.tcp_congestion_control)
cc_used=reno
lab_cc reno || { cc_used=$cc_default; lab_cc "$cc_default"; echo "bench: reno is not allowed in the lab's namespaces: transfers keep $cc_default" >&2; }
for proto in scp sftp; do
  xfer "sc-$proto" "$RUNS" up "$build/sshlua" scripts/bench/transfer.lua up "$proto" "$xdir/src.bin" "$remote"
  xfer "sc-$proto" "$RUNS" down "$build/sshlua" scripts/bench/transfer.lua down "$proto" "$xdir/down.bin" "$remote"
  cmp -s "$xdir/src.bin" "$xdir/down.bin" || { echo "bench: sshchain $proto download differs" >&2; exit 1; }
done
for mode in -O -s; do
  xfer "ossh$mode" "$RUNS" up scp "$mode" -q -F "$cfg" -o BatchMode=yes "$xdir/src.bin" "t4:$remote"
  xfer "ossh$mode" "$RUNS" down scp "$mode" -q -F "$cfg" -o BatchMode=yes "t4:$remote" "$xdir/down.bin"
done
if [ "$cc_used" != "$cc_default" ]; then
  lab_cc "$cc_default"
  xfer sc-scp-cc "$RUNS" down "$build/sshlua" scripts/bench/transfer.lua down scp "$xdir/down.bin" "$remote"
  xfer ossh-O-cc "$RUNS" down scp -O -q -F "$cfg" -o BatchMode=yes "t4:$remote" "$xdir/down.bin"
  lab_cc "$cc_used"
fi
# The client's file side alone, on this machine: a download writes a new file of MB (the kernel
# fills fresh page-cache pages: on a VM whose host takes freed memory back that varies a lot,
# 1.6-2.0 s of system CPU for 512 MB on a machine just booted here, 0.12-0.29 s an hour later), an
# upload reads the cached source. Measured in the same run, with the client's three cipher passes
# it is the client's floor.
file_cpu() { # up|down -> CPU seconds, median of 3 (a dd that fails fails the bench)
  local runs=()
  for _ in 1 2 3; do
    if [ "$1" = down ]; then
      rm -f "$xdir/floor.bin" "$xdir/down.bin"; sync # as before each timed download
      /usr/bin/time -f '%U %S' -o "$work/ftime" dd if=/dev/zero of="$xdir/floor.bin" bs=1M count="$MB" status=none || return 1
    else
      /usr/bin/time -f '%U %S' -o "$work/ftime" dd if="$xdir/src.bin" of=/dev/null bs=1M status=none || return 1
    fi
    runs+=("$(awk '{ print $1 + $2 }' "$work/ftime")")
  done
  rm -f "$xdir/floor.bin"
  printf '%s\n' "${runs[@]}" | median
}
fcpu_up=$(file_cpu up) || { echo "bench: dd failed measuring the client's floor" >&2; exit 1; }
fcpu_down=$(file_cpu down) || { echo "bench: dd failed measuring the client's floor" >&2; exit 1; }
xfer pm 1 up /usr/bin/python3 scripts/bench/paramiko_copy.py up "$lab" "$xdir/src.bin" "$remote"
xfer pm 1 down /usr/bin/python3 scripts/bench/paramiko_copy.py down "$lab" "$xdir/down.bin" "$remote"
rm -f "$xdir/down.bin"
# peak memory streaming 2 GiB (a sparse file on the target) to this machine's disk
ip netns exec scl-t4 truncate -s 2G /home/sclt4/bench-2g.bin
/usr/bin/time -o "$work/rss" -f '%M' "$build/sshlua" scripts/bench/transfer.lua down scp "$xdir/2g.bin" /home/sclt4/bench-2g.bin
rss2g=$(cat "$work/rss")
rm -f "$xdir/2g.bin" /home/sclt4/bench-2g.bin "$remote"
gb=$(awk -v mb="$MB" 'BEGIN { print mb / 1024 }')
# the machine's bound for this path: every byte is encrypted or decrypted 6 times (the client
# once per layer: t4, j2, j1; each server once), at the negotiated cipher's speed on one core
# (openssl speed, 16 KiB blocks), on every core at once; copies and system calls come on top
cipher=$("$build/sshlua" scripts/bench/transfer.lua cipher)
speed=$(openssl speed -elapsed -seconds 2 -bytes 16384 -evp "$(echo "$cipher" | sed 's/@.*//; s/^aes\([0-9]*\)-/aes-\1-/')" 2>/dev/null |
  awk '$1 ~ /^(AES|ChaCha|chacha)/ { v = $NF; sub(/k$/, "", v); print v * 1000 }')
passes=6
bound=$(awk -v s="${speed:-0}" -v c="$(nproc)" -v p="$passes" 'BEGIN { printf "%.0f", s * c / p / 1e6 }')
cfloor=$(awk -v s="${speed:-0}" 'BEGIN { printf "%.2f", (s > 0 ? 3 * 2^30 / s : 0) }') # the client's 3 cipher passes, s/GB
floor() { # up|down -> the client's floor in CPU s/GB: its cipher passes and its file side
  local f=$fcpu_up; [ "$1" = down ] && f=$fcpu_down
  awk -v c="$cfloor" -v f="$f" -v gb="$gb" 'BEGIN { printf "%.2f", c + f / gb }'
}
floor_up=$(floor up)
floor_down=$(floor down)
xrow() { # label key
  awk -v l="$1" -v uw="${xw[$2-up]}" -v uc="${xc[$2-up]}" -v dw="${xw[$2-down]}" -v dc="${xc[$2-down]}" -v mb="$MB" -v gb="$gb" 'BEGIN {
    printf "| %s | %.2f s (%.0f MB/s) | %.2f s | %.2f s (%.0f MB/s) | %.2f s |\n", l, uw, mb / uw, uc / gb, dw, mb / dw, dc / gb }'
}
xratio() { # label key other: wall and CPU ratios of key to other, both directions
  awk -v l="$1" -v a="${xw[$2-up]}" -v b="${xw[$3-up]}" -v c="${xw[$2-down]}" -v d="${xw[$3-down]}" \
      -v e="${xc[$2-up]}" -v f="${xc[$3-up]}" -v g="${xc[$2-down]}" -v h="${xc[$3-down]}" 'BEGIN {
    printf "| %s | %.2f | %.2f | %.2f | %.2f |\n", l, a / b, e / (f > 0 ? f : 1e-9), c / d, g / (h > 0 ? h : 1e-9) }'
}
brow() { # label key ref up|down: MB/s, against ref, against the bound, CPU and its floor, syscalls, busy
  local fl=$floor_up; [ "$4" = down ] && fl=$floor_down
  awk -v l="$1" -v w="${xw[$2-$4]}" -v rw="${xw[$3-$4]}" -v c="${xc[$2-$4]}" -v sc="${xs[$2-$4]}" \
    -v b="${xb[$2-$4]}" -v mb="$MB" -v gb="$gb" -v bound="$bound" -v cores="$(nproc)" -v fl="$fl" 'BEGIN { r = mb / w
      sv = (b - c) / gb; if (sv < 0) sv = 0 # the servers (and the kernel work they cause), s/GB
      sb = (sv + fl > 0 ? cores * 1024 / (sv + fl) : 0) # every core busy, this client at its floor
      printf "| %s | %.0f | %.2f | %.3f | %.2f | %.2f | %.0f k | %.0f %% | %.2f | %.0f | %.2f |\n", l, r, rw / w,
        (bound > 0 ? r / bound : 0), c / gb, (fl > 0 ? c / gb / fl : 0), sc / gb / 1000, 100 * b / (w * cores),
        sv, sb, (sb > 0 ? r / sb : 0) }'
}
{
  echo
  echo "| $MB MB through j1 -> j2 -> t4 | upload wall | upload client CPU per GB | download wall | download client CPU per GB |"
  echo "|---|---|---|---|---|"
  xrow "sshchain, SCP" sc-scp
  xrow "sshchain, SFTP" sc-sftp
  xrow "OpenSSH \`scp -O -J\` (legacy SCP)" ossh-O
  xrow "OpenSSH \`scp -J\` (SFTP)" ossh-s
  xrow "paramiko + python3-scp (the original tool)" pm
  echo
  echo "| ratio (wall < 1: sshchain faster; CPU < 1: less client CPU) | upload wall | upload CPU | download wall | download CPU |"
  echo "|---|---|---|---|---|"
  xratio "sshchain SCP / \`scp -O -J\`" sc-scp ossh-O
  xratio "sshchain SFTP / \`scp -J\` (SFTP)" sc-sftp ossh-s
  xratio "sshchain SCP / paramiko + scp" sc-scp pm
  echo
  echo "peak RSS streaming a 2 GiB file to disk through the chain: $((rss2g / 1024)) MiB (median of $RUNS runs above; paramiko: 1 run)"
  echo
  echo "Against the machine: cipher $cipher at $(awk -v s="${speed:-0}" 'BEGIN { printf "%.0f", s / 1e6 }') MB/s a core (openssl speed), $passes passes a byte on this path, $(nproc) cores: bound $bound MB/s (ciphers alone)."
  echo
  echo "The client's floor: its 3 cipher passes ($cfloor s/GB) and its file side alone (dd, median of 3): reading the cached source $(awk -v f="$fcpu_up" -v gb="$gb" 'BEGIN { printf "%.2f", f / gb }') s/GB, writing a new file $(awk -v f="$fcpu_down" -v gb="$gb" 'BEGIN { printf "%.2f", f / gb }') s/GB: $floor_up s/GB for an upload, $floor_down s/GB for a download."
  echo
  echo "The servers' CPU is the machine's busy time less the client's (the three sshd, scp or sftp-server on t4, and the kernel's work for them), per GB. With it, a row's own bound is what the machine could move were every core busy and the client at its floor: cores / (servers' s/GB + the client's floor)."
  echo
  echo "| $MB MB through j1 -> j2 -> t4 | MB/s | speed / OpenSSH's (same protocol) | of the bound | client CPU s/GB | client CPU / its floor | client syscalls/GB | machine busy | servers' CPU s/GB | bound with these servers, MB/s | of it |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  for k in sc-scp:ossh-O:"sshchain SCP" sc-sftp:ossh-s:"sshchain SFTP" ossh-O:ossh-O:"OpenSSH \`scp -O -J\`" ossh-s:ossh-s:"OpenSSH \`scp -J\` (SFTP)"; do
    IFS=: read -r key ref label <<<"$k"
    brow "$label upload" "$key" "$ref" up
    brow "$label download" "$key" "$ref" down
  done
  if [ -n "${xw[sc-scp-cc-down]:-}" ]; then
    brow "sshchain SCP download, lab sending with $cc_default" sc-scp-cc ossh-O-cc down
    brow "OpenSSH \`scp -O -J\` download, lab sending with $cc_default" ossh-O-cc ossh-O-cc down
  fi
  echo
  echo "(the lab's servers send with TCP $cc_used in these transfers, except where a row says otherwise; the client with this machine's default, $(sysctl -n net.ipv4.tcp_congestion_control))"
} | tee -a "$out"
lab_cc "$cc_default" || true
}
# ---- recipes: exec across 20 hosts vs a parallel loop of ssh -J; stress; memory per idle session
want recipes && {
hosts20="j1 j2 t3 t4 n01 n02 n03 n04 n05 n06 n07 n08 n09 n10 n11 n12 n13 n14 n15 n16"
cat > "$work/xargs-ssh" <<'SH'
#!/usr/bin/env bash
# xargs-ssh CONFIG FAILFILE HOSTS...: `ssh HOST true` on every host at once (xargs -P)
cfg=$1 failfile=$2; shift 2
printf '%s\n' "$@" | xargs -P "$#" -I{} sh -c "ssh -F '$cfg' -o BatchMode=yes {} true 2>/dev/null || echo {}" >"$failfile.list"
wc -l <"$failfile.list" >"$failfile"
exit 0
SH
chmod +x "$work/xargs-ssh"
# shellcheck disable=SC2086
a=$(measure "$build/sshlua" -r exec -n -i "$cfg" -q $hosts20 -- true)
# shellcheck disable=SC2086
b=$(measure "$work/xargs-ssh" "$cfg" "$work/fail" $hosts20)
ossh_fail=$(cat "$work/fail")
rx() { # label N: stress with N users at once on t4 -> a table row
  local js
  /usr/bin/time -o "$work/rss" -f '%M' "$build/sshlua" -r stress -i "$lab/inventory.lua" --users "$2" --barrier \
    --hold 1 --json t4 -- true >"$work/stress.json" 2>/dev/null || true
  js=$(cat "$work/stress.json")
  /usr/bin/python3 -c 'import json, sys
f = json.loads(sys.argv[1]); rss = int(sys.argv[3]) / 1024
print("| %s | %d/%d | %d | %.1f | %.0f / %.0f ms | %.1f / %.1f / %.1f ms | %.1f s | %.0f MiB |" % (sys.argv[2],
  f["sessions"], f["users"], f["peak_sessions"], f["logins_per_s"], f["logins_p50_ms"], f["logins_p99_ms"],
  f["p50_ms"], f["p99_ms"], f["max_ms"], f["duration_s"], rss))' "$js" "$1" "$(cat "$work/rss")"
}
. "$lab/inventory.env"
read -r n kb0 kb1 <<<"$("$build/sshlua" scripts/bench/idle.lua "${BENCH_IDLE:-1000}")"
{
  echo
  echo "| work | sshchain wall | OpenSSH wall | wall ratio | sshchain CPU | OpenSSH CPU | CPU ratio | notes |"
  echo "|---|---|---|---|---|---|---|---|"
  row "\`exec\` recipe on 20 hosts behind 2 jumps, vs \`xargs -P 20 ssh -J\`" "$a" "$b" "ssh failures: $ossh_fail/20"
  echo
  echo "| stress recipe on t4 through 2 jumps (\`--barrier\`: all logged in at once) | logged in | peak concurrent | logins/s | login p50 / p99 | command p50 / p99 / max | duration | peak RSS |"
  echo "|---|---|---|---|---|---|---|---|"
  rx "100 users" 100
  rx "500 users" 500
  rx "1000 users" 1000
  echo
  # inventories at scale: 10,000 hosts in both forms (load, select, every chain), and exec over
  # 1,000 inventory hosts mapped onto the lab's 16 nodes
  echo "| 10,000-host inventory: load + select + every chain | seconds | Lua heap | RSS growth |"
  echo "|---|---|---|---|"
  /usr/bin/time -o "$work/rss" -f '%M' "$build/sshlua" scripts/bench/inventory.lua 10000 "$work" |
    awk '{ printf "| %s form | %.2f s | %.1f MiB | %.1f MiB |\n", $1, $2, $3, $4 }'
  awk -v rss="$(cat "$work/rss")" 'BEGIN { printf "(peak RSS of the process that did both: %.0f MiB)\n", rss / 1024 }'
  echo
  lua5.4 scripts/bench/many_hosts.lua "$lab/inventory.lua" 1000 "$work/inv1000.lua"
  t1k0=$(date +%s.%N)
  /usr/bin/time -o "$work/rss" -f '%M' "$build/sshlua" -r exec -i "$work/inv1000.lua" -n -q --json --limit 64 'h*' \
    -- true >"$work/e1000.jsonl" 2>/dev/null || true
  t1k1=$(date +%s.%N)
  ok1k=$(grep -c '"ok":true' "$work/e1000.jsonl" || true)
  awk -v ok="$ok1k" -v a="$t1k0" -v b="$t1k1" -v rss="$(cat "$work/rss")" 'BEGIN {
    printf "exec recipe over 1,000 inventory hosts (16 lab nodes, --limit 64): %d/1000 ok in %.1f s, peak RSS %.0f MiB\n", ok, b - a, rss / 1024 }'
  echo
  awk -v n="$n" -v a="$kb0" -v b="$kb1" 'BEGIN { printf "memory per idle session through a shared jump: %.1f KiB (%d sessions: RSS %.1f MiB -> %.1f MiB)\n", (b - a) / n, n, a / 1024, b / 1024 }'
} | tee -a "$out"
}

# ---- soak: one process each, RSS and file descriptors sampled as they go (issue 16)
want soak && {
SOAK=${BENCH_SOAK:-10000}
"$build/sshlua" scripts/bench/soak.lua seq "$SOAK" rounds $((SOAK / 100)) 100 >"$work/soak1"
"$build/sshlua" scripts/bench/soak.lua flaps "${BENCH_FLAPS:-100}" forward "$SOAK" >"$work/soak2" 2>"$work/soak2.err"
{
  echo
  echo "| soak (two phases per process) | done | seconds | RSS after the first unit -> half-way -> end | growth over the second half | fds first -> end |"
  echo "|---|---|---|---|---|---|"
  cat "$work/soak1" "$work/soak2" | awk '
    { if (!($1 in m)) order[++k] = $1
      j = ++m[$1]; d[$1, j] = $2; r[$1, j] = $3; f[$1, j] = $4; t[$1, j] = $5 }
    END {
      label["seq"] = "sequential connect + `exec true` + close of t4 through j1 -> j2"
      label["rounds"] = "rounds of 100 concurrent sessions to t4 through j1 -> j2"
      label["flaps"] = "a reconnecting forward, j2 killed and back (flaps)"
      label["forward"] = "short HTTP connections through that forward"
      for (i = 1; i <= k; i++) { p = order[i]; last = m[p]; h = 2
        while (h < last && d[p, h] < d[p, last] / 2) h++
        unit = (p == "flaps") ? 100 : 1000
        g = (d[p, last] > d[p, h]) ? (r[p, last] - r[p, h]) * unit / (d[p, last] - d[p, h]) : 0
        printf "| %s | %d | %.0f s | %.1f -> %.1f -> %.1f MiB | %+.1f KiB per %d | %d -> %d |\n", label[p], d[p, last],
          t[p, last] - t[p, 1], r[p, 2] / 1024, r[p, h] / 1024, r[p, last] / 1024, g, unit, f[p, 1], f[p, last] } }'
  sed 's/^/    /' "$work/soak2.err"
} | tee -a "$out"
}

echo "(wall/CPU ratio < 1: sshchain is faster / uses less client CPU; $(date -u +%F), $(nproc) cores)" | tee -a "$out"

