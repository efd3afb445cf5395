#!/usr/bin/env bash
# lab.sh up|down|status: the test lab of sshchain, OpenSSH servers (and HTTP ones) in network
# namespaces on this machine, so that jump chains can be tested without any other host. What the
# lab is (namespaces, links, servers, users, keys) is written once, in scripts/lab/topology.lua;
# scripts/lab/generate.lua makes from it the lists this script builds the network from, the sshd
# configs, known_hosts, the client's ssh_config, the Lua inventory, and lab.lua for the specs.
#
#   root netns (the client) 10.231.1.1 --veth-- scl-j1 10.231.1.2 (sshd :22, :2200; :2299 silent)
#                                                  --veth-- scl-j2 10.231.2.2 (sshd :2222, :2223)
#   scl-j2's bridge 10.231.3.1/24: t1..t4 (10.231.3.11-14, sshd :22, HTTP :8080; t4 also :2022,
#   a hostile scp, spec/fixtures/evil-scp.sh, and :2023, SFTP only) and n01..n16 (.101-.116)
#
# Routing: every namespace, and the root one, has `unreachable 10.231.0.0/16`; only the connected
# /24s are more specific. Nothing forwards (ip_forward 0, no default routes), nothing leaves the
# machine.
#
# State lives in ${SSHCHAIN_LAB_DIR:-/tmp/sshchain-lab}: keys/ (client keys, kept across runs),
# hostkeys/ (kept), authorized/%u, conf/*.sshd_config, run/*.pid, www/tN/, <host>.log,
# known_hosts (t3/t4 hashed), known_hosts.bad (j1's key replaced), ssh_config, inventory.lua and
# inventory.env, and lab.lua (it exists only while the lab is up). The lab's system users are
# created once and left in place.
#
# `up` is idempotent (a lab that is fully up, started by this same script from the same
# topology, is left alone; anything else is torn down and rebuilt), waits until every server
# answers (10 s at most) and tears down what it made if anything fails. `down` never fails on a
# partial lab. `status` exits 0 iff all is up.
set -euo pipefail
umask 022

LAB=${SSHCHAIN_LAB_DIR:-/tmp/sshchain-lab}
SSHD=${SSHCHAIN_SSHD:-/usr/sbin/sshd}
if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY=$(command -v python3 || echo python3); fi
SELF=$(readlink -f "${BASH_SOURCE[0]}")
HERE=$(dirname "$SELF")
TOPOLOGY=$HERE/lab/topology.lua
GENERATE=$HERE/lab/generate.lua
FIXTURE_DIR=$HERE/../spec/fixtures
LOCK=/run/lock/sshchain-lab.lock; [ -d /run/lock ] || LOCK=/tmp/sshchain-lab.lock
OWNER=${LOCK%.lock}.dir   # the state dir of the lab that is up (namespaces are machine-wide)
READY_TIMEOUT=10          # seconds `up` waits for every server to answer

# RANGE NETS LINKS BRIDGE MEMBERS SSHDS HTTPS SILENT ENDPOINTS LAB_USERS PASSWORD SUDO_USERS
# AUTHORIZED CLIENT_KEYS HOST_KEYS FIXTURES, from the topology
eval "$(lua5.4 "$GENERATE" "$LAB" shell)"
ROOT_IFS=()
for l in "${LINKS[@]}"; do read -r a a_if _ _ _ _ <<<"$l"; [ "$a" = root ] && ROOT_IFS+=("$a_if"); done

log() { echo "lab: $*" >&2; }
die() { log "$*"; exit 1; }
now() { echo "${EPOCHREALTIME/[.,]/}"; }   # microseconds

# ---------------------------------------------------------------------------------------------
# probing

# probe FROM ADDR PORT KIND: 0 if the server answers as its kind should.
probe() {
  local from=$1 addr=$2 port=$3 kind=$4 script
  case $kind in
    ssh)    script='exec 3<>"/dev/tcp/$0/$1" && IFS= read -r -t 2 l <&3 && [[ $l == SSH-2.0-* ]]' ;;
    http)   script='exec 3<>"/dev/tcp/$0/$1" && printf "GET / HTTP/1.0\r\n\r\n" >&3 &&
                    IFS= read -r -t 2 l <&3 && [[ $l == HTTP/1.?" 200"* ]]' ;;
    silent) script='exec 3<>"/dev/tcp/$0/$1" || exit 1; IFS= read -r -t 0.3 l <&3; [ $? -gt 128 ]' ;;
    *) return 1 ;;
  esac
  local -a in_ns=()
  [ "$from" = - ] || in_ns=(ip netns exec "$from")
  "${in_ns[@]}" timeout 3 bash -c "$script" "$addr" "$port" >/dev/null 2>&1
}

# wait_ready: returns once every endpoint answers; fails (naming the laggards) after the timeout.
wait_ready() {
  local deadline=$(( $(now) + READY_TIMEOUT * 1000000 )) e name from ns addr port kind
  local -a pending=("${ENDPOINTS[@]}") still
  while :; do
    still=()
    for e in "${pending[@]}"; do
      read -r name from ns addr port kind <<<"$e"
      probe "$from" "$addr" "$port" "$kind" || still+=("$e")
    done
    [ ${#still[@]} -eq 0 ] && return 0
    if [ "$(now)" -gt "$deadline" ]; then
      for e in "${still[@]}"; do
        read -r name from ns addr port kind <<<"$e"
        log "$name ($kind on $addr:$port in $ns) does not answer after ${READY_TIMEOUT}s"
        [ -f "$LAB/$name.log" ] && tail -n 5 "$LAB/$name.log" | sed 's/^/lab:   /' >&2
      done
      return 1
    fi
    pending=("${still[@]}")
    sleep 0.1
  done
}

all_answer() {
  local e name from ns addr port kind
  for e in "${ENDPOINTS[@]}"; do
    read -r name from ns addr port kind <<<"$e"
    probe "$from" "$addr" "$port" "$kind" || return 1
  done
}

stamp() { printf '%s %s\n' "$(cat "$SELF" "$TOPOLOGY" "$GENERATE" "$FIXTURE_DIR"/* | sha256sum | cut -c1-64)" "$LAB"; }

# ---------------------------------------------------------------------------------------------
# teardown

lab_namespaces() { ip netns list 2>/dev/null | awk '$1 ~ /^scl-/ {print $1}' || true; }

teardown() {
  local ns round pids all
  local -a nss
  mapfile -t nss < <(lab_namespaces)
  # Kill everything running in the lab namespaces (sshd listeners, their sessions, HTTP servers,
  # anything a test started there): TERM first, KILL after 1 s; re-list each round because a
  # listener may fork while it dies.
  for round in $(seq 1 30); do
    all=""
    for ns in "${nss[@]}"; do
      pids=$(ip netns pids "$ns" 2>/dev/null || true)
      all="$all $pids"
    done
    [ -z "${all// /}" ] && break
    # shellcheck disable=SC2086
    if [ "$round" -le 10 ]; then kill -TERM $all 2>/dev/null || true
    else kill -KILL $all 2>/dev/null || true; fi
    sleep 0.1
  done
  for ns in "${nss[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  local i
  for i in "${ROOT_IFS[@]}"; do ip link del "$i" 2>/dev/null || true; done  # normally gone already
  while ip route del unreachable "$RANGE" 2>/dev/null; do :; done
  local d dirs=("$LAB")
  [ -s "$OWNER" ] && dirs+=("$(cat "$OWNER")")   # a lab started with another SSHCHAIN_LAB_DIR
  for d in "${dirs[@]}"; do
    [ "$d" = "$LAB" ] || [ -f "$d/run/stamp" ] || continue   # only ever touch a lab dir
    rm -f "$d"/run/*.pid "$d/run/stamp" "$d/lab.lua" 2>/dev/null || true
  done
  rm -f "$OWNER"
}

# ---------------------------------------------------------------------------------------------
# files: users, keys, configs

ensure_user() { # NAME
  local u=$1 home
  if ! id -u "$u" >/dev/null 2>&1; then
    local -a g=()
    getent group "$u" >/dev/null && g=(-g "$u")
    useradd -m -s /bin/bash "${g[@]}" "$u"
  fi
  home=$(getent passwd "$u" | cut -d: -f6)
  if [ -n "$home" ] && [ ! -d "$home" ]; then
    mkdir -p "$home" && chown "$u:" "$home" && chmod 755 "$home"
  fi
}

setup_users() {
  local u
  for u in "${LAB_USERS[@]}"; do ensure_user "$u"; done
  for u in "${!PASSWORD[@]}"; do printf '%s:%s\n' "$u" "${PASSWORD[$u]}"; done | chpasswd
  # users without a password log in by key only. A '*' hash matches no password, but unlike
  # useradd's '!' it does not mark the account locked (sshd refuses even key logins to those).
  for u in "${LAB_USERS[@]}"; do [ -n "${PASSWORD[$u]:-}" ] || usermod -p '*' "$u"; done
  # sudo with their password for SUDO_USERS, if sudo is installed. lecture=never keeps sudo's
  # first-use lecture (which mentions "password") out of command output.
  if command -v sudo >/dev/null 2>&1 && [ -d /etc/sudoers.d ] && [ ${#SUDO_USERS[@]} -gt 0 ]; then
    local f=/etc/sudoers.d/sshchain-lab tmp
    tmp=$(mktemp /etc/sudoers.d/.sshchain-lab.XXXXXX)
    {
      echo "# sshchain lab (scripts/lab.sh): these users may sudo with their password"
      for u in "${SUDO_USERS[@]}"; do printf 'Defaults:%s lecture=never\n%s ALL=(ALL) ALL\n' "$u" "$u"; done
    } >"$tmp"
    chmod 0440 "$tmp"
    if command -v visudo >/dev/null 2>&1 && ! visudo -qcf "$tmp" >/dev/null 2>&1; then
      rm -f "$tmp"; die "sudoers drop-in does not validate"
    fi
    mv -f "$tmp" "$f"
  fi
}

keygen() { # FILE TYPE [PASSPHRASE]: creates the key once
  local f=$1 type=$2 pass=${3:-}
  local -a bits=()
  [ "$type" = rsa ] && bits=(-b 3072)
  if [ ! -s "$f" ] || [ ! -s "$f.pub" ]; then
    rm -f "$f" "$f.pub"
    ssh-keygen -q -t "$type" "${bits[@]}" -N "$pass" -C "sshchain-lab-$(basename "$f")" -f "$f" </dev/null
  fi
  chmod 600 "$f"
}

setup_keys() {
  mkdir -p "$LAB/keys" "$LAB/hostkeys" "$LAB/authorized"
  chmod 755 "$LAB" "$LAB/keys" "$LAB/authorized"
  chmod 700 "$LAB/hostkeys"
  local k name type pass user key
  for k in "${CLIENT_KEYS[@]}"; do
    read -r name type pass <<<"$k"
    keygen "$LAB/keys/id_$name" "$type" "$pass"
  done
  local ktype
  for k in "${HOST_KEYS[@]}"; do
    name=${k%%:*} ktype=ed25519
    [ "$name" != "$k" ] && ktype=${k#*:}
    keygen "$LAB/hostkeys/$name" "$ktype"
  done
  local kind ca principals hflag cert
  for k in "${CERTS[@]}"; do   # certificates, signed again when the key or the CA is newer
    read -r kind ca key principals <<<"$k"
    hflag=()
    [ "$kind" = host ] && hflag=(-h)
    cert="$LAB/$key-cert.pub"
    if [ ! -s "$cert" ] || [ "$LAB/$key.pub" -nt "$cert" ] || [ "$LAB/keys/id_$ca" -nt "$cert" ]; then
      ssh-keygen -q -s "$LAB/keys/id_$ca" "${hflag[@]}" -I "sshchain-lab-$(basename "$key")" -n "$principals" \
        -V -1d:+3650d "$LAB/$key.pub" </dev/null >/dev/null 2>&1 || die "signing $key.pub with $ca failed"
    fi
  done
  for k in "${AUTHORIZED[@]}"; do
    read -r user key <<<"$k"
    cp "$LAB/keys/id_$key.pub" "$LAB/authorized/$user"
    chmod 644 "$LAB/authorized/$user"
  done
}

# Keyboard-interactive on t2 goes through PAM (on Linux sshd has no other kbd-int device), with
# Debian's stock /etc/pam.d/sshd (pam_unix; pam_loginuid works as we are root in the initial user
# namespace). Without that file PAM would fall back to "other" (deny), so then t2 uses plain
# password authentication instead and lab.lua says kbdint = false.
KBDINT=false
[ -f /etc/pam.d/sshd ] && KBDINT=true
SUDO=false
command -v sudo >/dev/null 2>&1 && SUDO=true

write_configs() {
  mkdir -p "$LAB/conf" "$LAB/run"
  local f
  for f in "${FIXTURES[@]}"; do install -m 755 "$FIXTURE_DIR/$f" "$LAB/$f"; done
  lua5.4 "$GENERATE" "$LAB" configs KBDINT=$KBDINT || die "generating the lab's configs failed"
}

write_www() {
  local e t _
  for e in "${HTTPS[@]}"; do
    read -r t _ <<<"$e"
    mkdir -p "$LAB/www/$t"
    printf 'sshchain lab %s\n' "$t" >"$LAB/www/$t/index.html"
    [ "$(stat -c %s "$LAB/www/$t/big.bin" 2>/dev/null || echo 0)" = 1048576 ] ||
      head -c 1048576 /dev/urandom >"$LAB/www/$t/big.bin"
  done
}

write_lab_lua() {
  lua5.4 "$GENERATE" "$LAB" lablua KBDINT=$KBDINT SUDO=$SUDO || die "generating lab.lua failed"
}

# ---------------------------------------------------------------------------------------------
# network and servers

# nsx NS CMD...: runs CMD in namespace NS (the lock fd is not passed on to daemons)
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@" 9>&-; }

ns_init() { # NS: creates it with lo up, no forwarding, no IPv6, only the unreachable /16 route
  ip netns add "$1"
  nsx "$1" sh -c 'for f in /proc/sys/net/ipv6/conf/all/disable_ipv6 /proc/sys/net/ipv6/conf/default/disable_ipv6; do
                   [ -w "$f" ] && echo 1 >"$f"; done; echo 0 >/proc/sys/net/ipv4/ip_forward'
  ip -n "$1" link set lo up
  ip -n "$1" route add unreachable "$RANGE"
}

build_network() {
  local ns l a a_if a_addr b b_if b_addr m name addr bns br baddr
  for ns in "${NETS[@]}"; do ns_init "$ns"; done
  for l in "${LINKS[@]}"; do
    read -r a a_if a_addr b b_if b_addr <<<"$l"
    if [ "$a" = root ]; then
      ip link add "$a_if" type veth peer name "$b_if" netns "$b"
      [ -w "/proc/sys/net/ipv6/conf/$a_if/disable_ipv6" ] && echo 1 >"/proc/sys/net/ipv6/conf/$a_if/disable_ipv6"
      ip addr add "$a_addr" dev "$a_if"
      ip link set "$a_if" up
      ip route replace unreachable "$RANGE"
    else
      ip -n "$a" link add "$a_if" type veth peer name "$b_if" netns "$b"
      ip -n "$a" addr add "$a_addr" dev "$a_if"
      ip -n "$a" link set "$a_if" up
    fi
    ip -n "$b" addr add "$b_addr" dev "$b_if"
    ip -n "$b" link set "$b_if" up
  done
  read -r bns br baddr <<<"$BRIDGE"
  ip -n "$bns" link add "$br" type bridge stp_state 0 forward_delay 0
  ip -n "$bns" addr add "$baddr" dev "$br"
  ip -n "$bns" link set "$br" up
  for m in "${MEMBERS[@]}"; do
    read -r name addr <<<"$m"
    ip -n "$bns" link add "v-$name" type veth peer name eth0 netns "scl-$name"
    ip -n "$bns" link set "v-$name" master "$br" up
    ip -n "scl-$name" addr add "$addr/24" dev eth0
    ip -n "scl-$name" link set eth0 up
  done
}

start_sshd() { # NAME NS
  : >"$LAB/$1.log"
  nsx "$2" "$SSHD" -f "$LAB/conf/$1.sshd_config" -E "$LAB/$1.log" </dev/null ||
    die "sshd $1 did not start (see $LAB/$1.log)"
}

start_daemon() { # NAME NS CMD...: a detached background process, output to $LAB/NAME.log
  local name=$1 ns=$2; shift 2
  nsx "$ns" setsid -f "$@" </dev/null >"$LAB/$name.log" 2>&1
}

SILENT_PY='
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(512)
held = []                      # accepted connections are kept open and never written to
while True:
    c, _ = s.accept()
    held.append(c)
    if len(held) > 1000:
        held.pop(0).close()
'

start_servers() {
  local e name ns addr port sns saddr sport
  mkdir -p /run/sshd; chmod 755 /run/sshd
  for e in "${SSHDS[@]}"; do read -r name ns <<<"$e"; start_sshd "$name" "$ns"; done
  for e in "${HTTPS[@]}"; do
    read -r name ns addr port <<<"$e"
    start_daemon "$name-http" "$ns" "$PY" -m http.server --bind "$addr" "$port" --directory "$LAB/www/$name"
  done
  read -r sns saddr sport <<<"$SILENT"
  start_daemon silent "$sns" "$PY" -c "$SILENT_PY" "$saddr" "$sport"
}

# ---------------------------------------------------------------------------------------------
# commands

cmd_up() {
  mkdir -p "$LAB/run"
  if [ -f "$LAB/lab.lua" ] && [ "$(cat "$LAB/run/stamp" 2>/dev/null)" = "$(stamp)" ] && all_answer; then
    log "already up ($LAB)"
    return 0
  fi
  local t0; t0=$(now)
  log "starting in $LAB"
  teardown
  UP_OK=0
  trap '[ "$UP_OK" = 1 ] || { log "up failed; tearing down"; teardown; }' EXIT
  [ -x "$SSHD" ] || die "no sshd at $SSHD (install openssh-server)"
  command -v ssh-keygen >/dev/null || die "no ssh-keygen (install openssh-client)"
  setup_users
  setup_keys
  write_configs
  write_www
  printf '%s\n' "$LAB" >"$OWNER"
  build_network
  start_servers
  wait_ready
  stamp >"$LAB/run/stamp"
  write_lab_lua
  UP_OK=1
  log "up in $(( ($(now) - t0) / 1000 )) ms: ${#SSHDS[@]} sshd in ${#NETS[@]} namespaces (kbdint=$KBDINT)"
}

cmd_down() {
  teardown
  log "down"
}

cmd_status() {
  local e name from ns addr port kind state rc=0
  for e in "${ENDPOINTS[@]}"; do
    read -r name from ns addr port kind <<<"$e"
    if ! ip netns list 2>/dev/null | grep -q "^$ns\b"; then state="no namespace"; rc=1
    elif probe "$from" "$addr" "$port" "$kind"; then state=up
    else state=DOWN; rc=1; fi
    printf '%-7s %-8s %-6s %-17s %s\n' "$ns" "$name" "$kind" "$addr:$port" "$state"
  done
  [ -f "$LAB/lab.lua" ] || { echo "no $LAB/lab.lua"; rc=1; }
  return $rc
}

[ "$(id -u)" = 0 ] || die "must run as root (network namespaces, sshd, users)"
exec 9>"$LOCK"
flock -w 60 9 || die "another lab.sh holds $LOCK"
case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
