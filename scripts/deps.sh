#!/usr/bin/env bash
# deps.sh [build|unit|test|fuzz|lint|bench|demo]: installs the Debian packages this project needs that are
# missing (as root, with apt-get), so that `make test` works on a fresh Debian 12 machine.
set -euo pipefail
what=${1:-test}
pkgs=(gcc make pkg-config libc6-dev libssh-dev liblua5.4-dev lua5.4 libuv1-dev libssl-dev)
case "$what" in
  build) ;;
  unit) pkgs+=(lua-busted lua-cjson lua-argparse openssh-client) ;;
  fuzz) pkgs+=(clang libclang-rt-14-dev) ;;
  lint) pkgs+=(clang-format cppcheck lua-check) ;;
  test|demo|bench)
    pkgs+=(lua-busted lua-cjson lua-argparse openssh-server openssh-client iproute2 python3 sudo
           procps psmisc curl luarocks lua-luv lua-cqueues netcat-openbsd)
    [ "$what" = test ] && pkgs+=(clang libclang-rt-14-dev clang-format cppcheck lua-check chromium parallel)
    [ "$what" = bench ] && pkgs+=(iperf3 python3-paramiko python3-scp time linux-perf)
    ;;
  *) echo "usage: $0 [build|unit|test|fuzz|lint|bench|demo]" >&2; exit 2 ;;
esac
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "deps: missing packages: ${missing[*]} (run as root, or install them)" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
