#!/usr/bin/env bash
# lab.sh up|down|status: the test lab of sshchain, a handful of sshd (and HTTP) servers in network
# namespaces on this machine, so that jump chains can be tested without any other host.
#
#   root netns (the client)
#   10.231.1.1 ──veth── scl-j1  10.231.1.2   sshd :22   (sclj1, password j1-secret or key id_j1)
#                              │              sshd :2200 (same, MaxSessions 100, MaxStartups 200:30:400)
#                              │              :2299 accepts and never answers ("j3", silent)
#                              │              :2399 nothing listening (refused)
#                    10.231.2.1│
#                            veth
#                    10.231.2.2│
#                       scl-j2  10.231.2.2   sshd :2222 (sclj2, key id_j2 or password j2-secret)
#                              │              sshd :2223 (same, AllowTcpForwarding no)
#                    10.231.3.1│ br0 (bridge inside scl-j2, one veth per target)
#           ┌──────────────┬───┴──────────┬──────────────┐
#       scl-t1         scl-t2          scl-t3         scl-t4
#     10.231.3.11    10.231.3.12     10.231.3.13    10.231.3.14     sshd :22 and HTTP :8080 each
#     sclt1: key     sclt2: kbd-int  sclt3: pw/key  sclt4: pw/key   (index.html = "sshchain lab tN",
#     id_t1 (passphrase t1-pass)     (+sudo)                          big.bin = 1 MiB random)
#                                                     t4 also: sshd :2022 (a hostile "scp": its
#                                                     ForceCommand is evil-scp.sh) and :2023 (SFTP
#                                                     only: ForceCommand internal-sftp)
#       n01..n16 10.231.3.101-116 on the same bridge: a small cluster, sshd :22 each (sclnode,
#       key id_node, one host key for all)
#
# Routing: every namespace, and the root one, has `unreachable 10.231.0.0/16`; only the connected
# /24s are more specific. So the root reaches 10.231.1.0/24 only, j1 reaches .1/.2, j2 reaches
# .2/.3, targets .3 only; nothing forwards (ip_forward 0, no default routes), nothing leaves the
# machine. 10.231.9.9 is unreachable everywhere.
#
# State lives in ${SSHCHAIN_LAB_DIR:-/tmp/sshchain-lab}: keys/ (client keys, kept across runs),
# hostkeys/ (kept), authorized/%u, conf/*.sshd_config, run/*.pid, www/tN/, <host>.log,
# known_hosts (t3/t4 hashed), known_hosts.bad (j1's key replaced), ssh_config (for the OpenSSH
# client: `ssh -F $LAB/ssh_config t4`), and lab.lua (the description the specs read; it exists only
# while the lab is up). System users sclj1 sclj2 sclt1..sclt4 are created once and left in place.
#
# `up` is idempotent (a lab that is fully up, started by this same script, is left alone; anything
# else is torn down and rebuilt), waits until every server answers (10 s at most) and tears down
# what it made if anything fails. `down` never fails on a partial lab. `status` exits 0 iff all up.
set -euo pipefail
umask 022

LAB=${SSHCHAIN_LAB_DIR:-/tmp/sshchain-lab}
SSHD=${SSHCHAIN_SSHD:-/usr/sbin/sshd}
if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY=$(command -v python3 || echo python3); fi
SELF=$(readlink -f "${BASH_SOURCE[0]}")
LOCK=/run/lock/sshchain-lab.lock; [ -d /run/lock ] || LOCK=/tmp/sshchain-lab.lock
OWNER=${LOCK%.lock}.dir   # the state dir of the lab that is up (namespaces are machine-wide)
READY_TIMEOUT=10          # seconds `up` waits for every server to answer

RANGE=10.231.0.0/16
ROOT_IF=sclv-j1           # the root namespace's end of the veth to j1
TARGETS=(t1 t2 t3 t4)
declare -A TIP=([t1]=10.231.3.11 [t2]=10.231.3.12 [t3]=10.231.3.13 [t4]=10.231.3.14)
# a small cluster behind j2: n01..n16 (10.231.3.101-116), user sclnode, key id_node, one host key
NODES=()
for i in $(seq 1 16); do n=$(printf 'n%02d' "$i"); NODES+=("$n"); TIP[$n]=10.231.3.$((100 + i)); done
NETS=(scl-j1 scl-j2 scl-t1 scl-t2 scl-t3 scl-t4)
for n in "${NODES[@]}"; do NETS+=("scl-$n"); done
declare -A PASSWORD=([sclj1]=j1-secret [sclj2]=j2-secret [sclt2]=t2-secret [sclt3]=t3-secret
                     [sclt4]=t4-secret)   # sclt1 has no usable password (key only)
T1_PASSPHRASE=t1-pass

# Every server the lab runs: name, where to probe it from ("-" = root netns, i.e. over the real
# path a client takes), namespace it runs in, address, port, kind (ssh: sends an SSH banner;
# http: answers GET / with 200; silent: accepts and says nothing).
ENDPOINTS=(
  "j1       -       scl-j1  10.231.1.2   22    ssh"
  "j1big    -       scl-j1  10.231.1.2   2200  ssh"
  "silent   -       scl-j1  10.231.1.2   2299  silent"
  "j2       scl-j1  scl-j2  10.231.2.2   2222  ssh"
  "j2nofwd  scl-j1  scl-j2  10.231.2.2   2223  ssh"
)
for t in "${TARGETS[@]}"; do
  ENDPOINTS+=("$t scl-j2 scl-$t ${TIP[$t]} 22 ssh" "$t-http scl-j2 scl-$t ${TIP[$t]} 8080 http")
done
ENDPOINTS+=("t4evil scl-j2 scl-t4 ${TIP[t4]} 2022 ssh" "t4sftp scl-j2 scl-t4 ${TIP[t4]} 2023 ssh")
for n in "${NODES[@]}"; do ENDPOINTS+=("$n scl-j2 scl-$n ${TIP[$n]} 22 ssh"); done

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

stamp() { printf '%s %s\n' "$(sha256sum "$SELF" | cut -c1-64)" "$LAB"; }

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
  ip link del "$ROOT_IF" 2>/dev/null || true   # normally gone with scl-j1 already
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
  for u in sclj1 sclj2 sclt1 sclt2 sclt3 sclt4 sclnode; do ensure_user "$u"; done
  for u in "${!PASSWORD[@]}"; do printf '%s:%s\n' "$u" "${PASSWORD[$u]}"; done | chpasswd
  # sclt1 logs in by key only. A '*' hash matches no password, but unlike useradd's '!' it does
  # not mark the account locked (sshd refuses even key logins to locked accounts).
  usermod -p '*' sclt1
  usermod -p '*' sclnode
  # sudo for sclt3 (password required) if sudo is installed. lecture=never keeps sudo's first-use
  # lecture (which mentions "password") out of command output.
  if command -v sudo >/dev/null 2>&1 && [ -d /etc/sudoers.d ]; then
    local f=/etc/sudoers.d/sshchain-lab tmp
    tmp=$(mktemp /etc/sudoers.d/.sshchain-lab.XXXXXX)
    printf '# sshchain lab (scripts/lab.sh): sclt3 may sudo with its password\n%s\n%s\n' \
      'Defaults:sclt3 lecture=never' 'sclt3 ALL=(ALL) ALL' >"$tmp"
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

hostkey() { cut -d' ' -f1,2 "$LAB/hostkeys/$1.pub"; }   # NAME -> "ssh-ed25519 AAAA..."

setup_keys() {
  mkdir -p "$LAB/keys" "$LAB/hostkeys" "$LAB/authorized"
  chmod 755 "$LAB" "$LAB/keys" "$LAB/authorized"
  chmod 700 "$LAB/hostkeys"
  local k
  for k in j1 j2 t3 t4 node other; do keygen "$LAB/keys/id_$k" ed25519; done
  keygen "$LAB/keys/id_t1" ed25519 "$T1_PASSPHRASE"
  keygen "$LAB/keys/id_t2" rsa
  for k in j1 j2 t1 t2 t3 t4 node bad; do keygen "$LAB/hostkeys/$k" ed25519; done
  # id_other is authorized nowhere
  for k in j1 j2 t1 t2 t3 t4 node; do
    cp "$LAB/keys/id_$k.pub" "$LAB/authorized/scl$k"
    chmod 644 "$LAB/authorized/scl$k"
  done

  # known_hosts: plain entries except t3 and t4, which are hashed (ssh-keygen -H)
  local kh=$LAB/known_hosts tmp hashed
  tmp=$(mktemp "$LAB/.kh.XXXXXX"); hashed=$(mktemp "$LAB/.khh.XXXXXX")
  printf '%s %s\n' "${TIP[t3]}" "$(hostkey t3)" "${TIP[t4]}" "$(hostkey t4)" >"$hashed"
  ssh-keygen -q -H -f "$hashed" >/dev/null 2>&1
  rm -f "$hashed.old"
  {
    echo "10.231.1.2 $(hostkey j1)"
    echo "[10.231.1.2]:2200 $(hostkey j1)"
    echo "[10.231.2.2]:2222 $(hostkey j2)"
    echo "[10.231.2.2]:2223 $(hostkey j2)"
    echo "[${TIP[t4]}]:2022 $(hostkey t4)"
    echo "[${TIP[t4]}]:2023 $(hostkey t4)"
    echo "${TIP[t1]} $(hostkey t1)"
    for n in "${NODES[@]}"; do echo "${TIP[$n]} $(hostkey node)"; done
    echo "${TIP[t2]} $(hostkey t2)"
    cat "$hashed"
  } >"$tmp"
  rm -f "$hashed"
  grep -q '^|1|' "$tmp" || die "hashing known_hosts entries failed"
  chmod 644 "$tmp"; mv -f "$tmp" "$kh"
  # known_hosts.bad: the same, with j1's key replaced by another one (a man in the middle)
  sed -E "s#^(10\.231\.1\.2|\[10\.231\.1\.2\]:2200) .*#\1 $(hostkey bad)#" "$kh" >"$kh.bad.tmp"
  [ "$(grep -c "$(hostkey bad)" "$kh.bad.tmp")" = 2 ] || die "writing known_hosts.bad failed"
  mv -f "$kh.bad.tmp" "$kh.bad"
}

# sshd_conf NAME HOSTKEY ADDR PORT USER [OPTION LINES...]: the option lines come first (sshd
# takes the first value of an option), then what all lab sshds share.
sshd_conf() {
  local name=$1 hk=$2 addr=$3 port=$4 user=$5; shift 5
  {
    echo "# $name, generated by scripts/lab.sh"
    printf '%s\n' "$@"
    cat <<EOF
Port $port
ListenAddress $addr
AddressFamily inet
HostKey $LAB/hostkeys/$hk
PidFile $LAB/run/$name.pid
AuthorizedKeysFile $LAB/authorized/%u
AllowUsers $user
StrictModes no
PermitRootLogin no
PubkeyAuthentication yes
PermitEmptyPasswords no
X11Forwarding no
PrintMotd no
AcceptEnv LANG LC_*
Subsystem sftp internal-sftp
LogLevel VERBOSE
EOF
  } >"$LAB/conf/$name.sshd_config"
}

# Keyboard-interactive on t2 goes through PAM (on Linux sshd has no other kbd-int device), with
# Debian's stock /etc/pam.d/sshd (pam_unix; pam_loginuid works as we are root in the initial user
# namespace). Without that file PAM would fall back to "other" (deny), so then t2 uses plain
# password authentication instead and lab.lua says kbdint = false.
KBDINT=false
[ -f /etc/pam.d/sshd ] && KBDINT=true

write_configs() {
  mkdir -p "$LAB/conf" "$LAB/run"
  local pw=(UsePAM\ no "PasswordAuthentication yes" "KbdInteractiveAuthentication no")
  local nopw=(UsePAM\ no "PasswordAuthentication no" "KbdInteractiveAuthentication no")
  sshd_conf j1      j1 10.231.1.2 22   sclj1 "${pw[@]}"
  sshd_conf j1big   j1 10.231.1.2 2200 sclj1 "${pw[@]}" "MaxSessions 100" "MaxStartups 200:30:400"
  sshd_conf j2      j2 10.231.2.2 2222 sclj2 "${pw[@]}"
  sshd_conf j2nofwd j2 10.231.2.2 2223 sclj2 "${pw[@]}" "AllowTcpForwarding no"
  sshd_conf t1 t1 "${TIP[t1]}" 22 sclt1 "${nopw[@]}"
  if $KBDINT; then
    sshd_conf t2 t2 "${TIP[t2]}" 22 sclt2 "UsePAM yes" "PasswordAuthentication no" \
      "KbdInteractiveAuthentication yes"
  else
    sshd_conf t2 t2 "${TIP[t2]}" 22 sclt2 "${pw[@]}"
  fi
  sshd_conf t3 t3 "${TIP[t3]}" 22 sclt3 "${pw[@]}"
  sshd_conf t4 t4 "${TIP[t4]}" 22 sclt4 "${pw[@]}"
  sshd_conf t4evil t4 "${TIP[t4]}" 2022 sclt4 "${pw[@]}" "ForceCommand $LAB/evil-scp.sh"
  sshd_conf t4sftp t4 "${TIP[t4]}" 2023 sclt4 "${pw[@]}" "ForceCommand internal-sftp"
  local n
  for n in "${NODES[@]}"; do sshd_conf "$n" node "${TIP[$n]}" 22 sclnode "${nopw[@]}"; done
  write_evil_scp
}

# evil-scp.sh: the hostile server of the transfer specs. `scp -f -- '.../ATTACK'` answers with the
# records of that attack (the legacy protocol's known holes: CVE-2019-6111, CVE-2018-20685,
# CVE-2019-6109/6110), reading the client's acknowledgement after each; any other command runs
# normally, except that `sha256sum` lies about files named "liar".
write_evil_scp() {
  cat >"$LAB/evil-scp.sh" <<'EVIL'
#!/bin/bash
cmd=${SSH_ORIGINAL_COMMAND:-}
case $cmd in
  "scp -f"*) ;;
  *sha256sum*liar*) exec sh -c "$cmd" | sed 's/^[0-9a-f]\{64\}/0000000000000000000000000000000000000000000000000000000000000000/' ;;
  *) exec sh -c "$cmd" ;;
esac
path=${cmd##*-- }; path=${path//\'/}; attack=${path##*/}
ack() { dd bs=1 count=1 status=none >/dev/null; }
send() { printf "$@"; ack; }
ack                                                     # the client's go-ahead
case $attack in
  dotdot)      send 'C0644 5 ..\n'; send 'evil\n\0' ;;
  slash)       send 'C0644 5 ../escaped.txt\n'; send 'evil\n\0' ;;
  absolute)    send 'C0644 5 /tmp/escaped.txt\n'; send 'evil\n\0' ;;
  empty)       send 'C0644 5 \n'; send 'evil\n\0' ;;
  dot)         send 'D0777 0 .\n'; send 'E\n' ;;
  renamed.txt) send 'C0644 5 .bashrc\n'; send 'evil\n\0' ;;
  second.txt)  send 'C0644 5 second.txt\n'; send 'good\n\0'; send 'C0644 5 extra.txt\n'; send 'evil\n\0' ;;
  nodir)       send 'D0755 0 nodir\n'; send 'C0644 5 inside.txt\n'; send 'evil\n\0'; send 'E\n' ;;
  nested)      send 'D0755 0 nested\n'; send 'C0644 5 ../escaped.txt\n'; send 'evil\n\0'; send 'E\n' ;;
  badmode.txt) send 'C06x4 5 badmode.txt\n'; send 'evil\n\0' ;;
  setuid.txt)  send 'C4777 5 setuid.txt\n'; send 'good\n\0' ;;
  huge.txt)    send 'C0644 99999999999999999999999 huge.txt\n' ;;
  short.txt)   printf 'C0644 100 short.txt\n'; ack; printf 'only a few bytes' ;;
  noise.txt)   printf '\001scp: \033[31mred\033[0m\a alert\n' ;;
  text.txt)    printf 'Welcome to the machine!\n' ;;
  liar)        send 'C0644 5 liar\n'; send 'good\n\0' ;;
  *)           printf '\001scp: %s: unknown attack\n' "$attack" ;;
esac
exit 0
EVIL
  chmod 755 "$LAB/evil-scp.sh"
}

write_www() {
  local t
  for t in "${TARGETS[@]}"; do
    mkdir -p "$LAB/www/$t"
    printf 'sshchain lab %s\n' "$t" >"$LAB/www/$t/index.html"
    [ "$(stat -c %s "$LAB/www/$t/big.bin" 2>/dev/null || echo 0)" = 1048576 ] ||
      head -c 1048576 /dev/urandom >"$LAB/www/$t/big.bin"
  done
}

lq() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "$s"; }   # a Lua string literal

write_lab_lua() {
  local K=$LAB/keys t tmp
  tmp=$(mktemp "$LAB/.lab.lua.XXXXXX")
  {
    echo "-- the sshchain test lab, written by scripts/lab.sh up (removed by down)"
    echo "return {"
    echo "  dir = $(lq "$LAB"),"
    echo "  known_hosts = $(lq "$LAB/known_hosts"),"
    echo "  known_hosts_bad = $(lq "$LAB/known_hosts.bad"),  -- j1's key (both ports) replaced"
    echo "  ssh_config = $(lq "$LAB/ssh_config"),"
    echo "  keys = { j1 = $(lq "$K/id_j1"), j2 = $(lq "$K/id_j2"), t1 = $(lq "$K/id_t1"),"
    echo "           t2 = $(lq "$K/id_t2"), t3 = $(lq "$K/id_t3"), t4 = $(lq "$K/id_t4"),"
    echo "           other = $(lq "$K/id_other") },  -- id_t1 has passphrase t1-pass; id_t2 is RSA 3072"
    echo "  j1 = { host = \"10.231.1.2\", port = 22, user = \"sclj1\", password = \"j1-secret\" },"
    echo "  j1big = { host = \"10.231.1.2\", port = 2200, user = \"sclj1\", password = \"j1-secret\" },"
    echo "  j2 = { host = \"10.231.2.2\", port = 2222, user = \"sclj2\", identity = $(lq "$K/id_j2") },"
    echo "  j2nofwd = { host = \"10.231.2.2\", port = 2223, user = \"sclj2\", identity = $(lq "$K/id_j2") },"
    echo "  t1 = { host = \"${TIP[t1]}\", port = 22, user = \"sclt1\", identity = $(lq "$K/id_t1"), passphrase = \"$T1_PASSPHRASE\" },"
    echo "  t2 = { host = \"${TIP[t2]}\", port = 22, user = \"sclt2\", password = \"t2-secret\" },"
    echo "  t3 = { host = \"${TIP[t3]}\", port = 22, user = \"sclt3\", password = \"t3-secret\", identity = $(lq "$K/id_t3") },"
    echo "  t4 = { host = \"${TIP[t4]}\", port = 22, user = \"sclt4\", password = \"t4-secret\", identity = $(lq "$K/id_t4") },"
    echo "  evil = { host = \"${TIP[t4]}\", port = 2022, user = \"sclt4\", identity = $(lq "$K/id_t4") },  -- hostile scp (evil-scp.sh)"
    echo "  sftponly = { host = \"${TIP[t4]}\", port = 2023, user = \"sclt4\", identity = $(lq "$K/id_t4") },  -- ForceCommand internal-sftp"
    echo "  passwords = { j2 = \"j2-secret\" },  -- j2 (both ports) also accepts this password"
    printf '  http = {'
    for t in "${TARGETS[@]}"; do printf ' %s = "%s:8080",' "$t" "${TIP[$t]}"; done
    echo ' },  -- GET /index.html -> "sshchain lab tN\n", GET /big.bin -> 1 MiB'
    echo "  big_size = 1048576,"
    printf '  big_sha256 = {'
    for t in "${TARGETS[@]}"; do printf ' %s = "%s",' "$t" "$(sha256sum <"$LAB/www/$t/big.bin" | cut -c1-64)"; done
    echo ' },'
    echo "  silent = { host = \"10.231.1.2\", port = 2299 },   -- accepts, never answers"
    echo "  refused = { host = \"10.231.1.2\", port = 2399 },  -- connection refused"
    echo "  unreachable = { host = \"10.231.9.9\", port = 22 }, -- no route (EHOSTUNREACH at once)"
    echo "  kbdint = $KBDINT,  -- whether t2 authenticates by keyboard-interactive (else password)"
    echo "  sudo = $(command -v sudo >/dev/null 2>&1 && echo true || echo false),  -- sclt3 may sudo (password t3-secret)"
    echo "  ns = { j1 = \"scl-j1\", j2 = \"scl-j2\", t1 = \"scl-t1\", t2 = \"scl-t2\", t3 = \"scl-t3\", t4 = \"scl-t4\" },"
    printf '  nodes = {  -- the cluster behind j2: user sclnode, key id_node\n'
    for t in "${NODES[@]}"; do
      printf '    { name = "%s", host = "%s", port = 22, user = "sclnode", identity = %s },\n' "$t" "${TIP[$t]}" "$(lq "$K/id_node")"
    done
    echo "  },"
    echo "  inventory = $(lq "$LAB/inventory.lua"),  -- the lab as a Lua inventory (secrets: inventory.env)"
    echo "  inventory_env = $(lq "$LAB/inventory.env"),"
    echo "}"
  } >"$tmp"
  chmod 644 "$tmp"; mv -f "$tmp" "$LAB/lab.lua"
}

# inventory.lua: the lab as a Lua inventory for the recipes (sshlua -r ... -i inventory.lua);
# secrets are read from the environment (inventory.env sets them: `. inventory.env`).
write_inventory() {
  local K=$LAB/keys t tmp
  tmp=$(mktemp "$LAB/.inv.XXXXXX")
  {
    echo "-- the sshchain lab as a Lua inventory (scripts/lab.sh); secrets from the environment:"
    echo "-- . $LAB/inventory.env"
    echo "return {"
    echo "  defaults = { known_hosts = $(lq "$LAB/known_hosts"), timeout = 10 },"
    echo "  hosts = {"
    echo "    j1 = { host = \"10.231.1.2\", user = \"sclj1\", password = env \"SCL_J1_PASSWORD\" },"
    echo "    j2 = { host = \"10.231.2.2\", port = 2222, user = \"sclj2\", identity = $(lq "$K/id_j2"), via = \"j1\" },"
    echo "    t1 = { host = \"${TIP[t1]}\", user = \"sclt1\", identity = $(lq "$K/id_t1"), passphrase = env \"SCL_T1_PASSPHRASE\", via = \"j2\" },"
    echo "    t2 = { host = \"${TIP[t2]}\", user = \"sclt2\", password = env \"SCL_T2_PASSWORD\", via = \"j2\" },"
    echo "    t3 = { host = \"${TIP[t3]}\", user = \"sclt3\", identity = $(lq "$K/id_t3"), via = \"j2\" },"
    echo "    t4 = { host = \"${TIP[t4]}\", user = \"sclt4\", identity = $(lq "$K/id_t4"), via = \"j2\" },"
    for t in "${NODES[@]}"; do
      echo "    $t = { host = \"${TIP[$t]}\", user = \"sclnode\", identity = $(lq "$K/id_node"), via = \"j2\" },"
    done
    echo "  },"
    echo "  groups = {"
    echo "    jumps = { \"j1\", \"j2\" },"
    echo "    targets = { \"t1\", \"t2\", \"t3\", \"t4\" },"
    echo "    nodes = { \"n*\" },"
    echo "    all = { \"jumps\", \"targets\", \"nodes\" },"
    echo "  },"
    echo "}"
  } >"$tmp"
  chmod 644 "$tmp"; mv -f "$tmp" "$LAB/inventory.lua"
  printf 'export SCL_J1_PASSWORD=%s SCL_T1_PASSPHRASE=%s SCL_T2_PASSWORD=%s\n' \
    "${PASSWORD[sclj1]}" "$T1_PASSPHRASE" "${PASSWORD[sclt2]}" >"$LAB/inventory.env"
  chmod 600 "$LAB/inventory.env"
}

write_ssh_config() {
  local K=$LAB/keys t
  {
    echo "# OpenSSH client config for the sshchain lab (scripts/lab.sh): ssh -F $LAB/ssh_config t1"
    printf 'Host j1\n  HostName 10.231.1.2\n  Port 22\n  User sclj1\n  IdentityFile %s\n' "$K/id_j1"
    printf 'Host j1big\n  HostName 10.231.1.2\n  Port 2200\n  User sclj1\n  IdentityFile %s\n' "$K/id_j1"
    printf 'Host j2\n  HostName 10.231.2.2\n  Port 2222\n  User sclj2\n  IdentityFile %s\n  ProxyJump j1\n' "$K/id_j2"
    printf 'Host j2nofwd\n  HostName 10.231.2.2\n  Port 2223\n  User sclj2\n  IdentityFile %s\n  ProxyJump j1\n' "$K/id_j2"
    for t in "${TARGETS[@]}"; do
      printf 'Host %s\n  HostName %s\n  Port 22\n  User scl%s\n  IdentityFile %s\n  ProxyJump j2\n' \
        "$t" "${TIP[$t]}" "$t" "$K/id_$t"
    done
    for t in "${NODES[@]}"; do
      printf 'Host %s\n  HostName %s\n  Port 22\n  User sclnode\n  IdentityFile %s\n  ProxyJump j2\n' \
        "$t" "${TIP[$t]}" "$K/id_node"
    done
    printf 'Host *\n  UserKnownHostsFile %s\n  GlobalKnownHostsFile /dev/null\n' "$LAB/known_hosts"
    printf '  StrictHostKeyChecking yes\n  IdentitiesOnly yes\n  ConnectTimeout 5\n'
  } >"$LAB/ssh_config"
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
  local ns t
  for ns in "${NETS[@]}"; do ns_init "$ns"; done
  # root <-> j1
  ip link add "$ROOT_IF" type veth peer name v-root netns scl-j1
  [ -w "/proc/sys/net/ipv6/conf/$ROOT_IF/disable_ipv6" ] && echo 1 >"/proc/sys/net/ipv6/conf/$ROOT_IF/disable_ipv6"
  ip addr add 10.231.1.1/24 dev "$ROOT_IF"
  ip link set "$ROOT_IF" up
  ip route replace unreachable "$RANGE"
  ip -n scl-j1 addr add 10.231.1.2/24 dev v-root
  ip -n scl-j1 link set v-root up
  # j1 <-> j2
  ip -n scl-j1 link add v-j2 type veth peer name v-j1 netns scl-j2
  ip -n scl-j1 addr add 10.231.2.1/24 dev v-j2
  ip -n scl-j1 link set v-j2 up
  ip -n scl-j2 addr add 10.231.2.2/24 dev v-j1
  ip -n scl-j2 link set v-j1 up
  # j2's bridge to the targets
  ip -n scl-j2 link add br0 type bridge stp_state 0 forward_delay 0
  ip -n scl-j2 addr add 10.231.3.1/24 dev br0
  ip -n scl-j2 link set br0 up
  for t in "${TARGETS[@]}" "${NODES[@]}"; do
    ip -n scl-j2 link add "v-$t" type veth peer name eth0 netns "scl-$t"
    ip -n scl-j2 link set "v-$t" master br0 up
    ip -n "scl-$t" addr add "${TIP[$t]}/24" dev eth0
    ip -n "scl-$t" link set eth0 up
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
  local t
  mkdir -p /run/sshd; chmod 755 /run/sshd
  start_sshd j1 scl-j1
  start_sshd j1big scl-j1
  start_sshd j2 scl-j2
  start_sshd j2nofwd scl-j2
  for t in "${TARGETS[@]}"; do
    start_sshd "$t" "scl-$t"
    start_daemon "$t-http" "scl-$t" "$PY" -m http.server --bind "${TIP[$t]}" 8080 --directory "$LAB/www/$t"
  done
  start_sshd t4evil scl-t4
  start_sshd t4sftp scl-t4
  for t in "${NODES[@]}"; do start_sshd "$t" "scl-$t"; done
  start_daemon silent scl-j1 "$PY" -c "$SILENT_PY" 10.231.1.2 2299
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
  write_ssh_config
  write_inventory
  printf '%s\n' "$LAB" >"$OWNER"
  build_network
  start_servers
  wait_ready
  stamp >"$LAB/run/stamp"
  write_lab_lua
  UP_OK=1
  log "up in $(( ($(now) - t0) / 1000 )) ms: j1 10.231.1.2:22/2200, j2 10.231.2.2:2222/2223, t1-t4 10.231.3.11-14, n01-n16 10.231.3.101-116 (kbdint=$KBDINT)"
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
