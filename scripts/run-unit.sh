#!/usr/bin/env bash
# run-unit.sh BUILD: the fast tier, no root and no lab: the C unit tests, the fuzz corpora replayed,
# and the busted specs of spec/unit. Ends with one line "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
runner=${SSHCHAIN_RUNNER:-lua5.4}
log=$build/test-logs
mkdir -p "$log"
pass=0 fail=0
count_tap() {
  local p f
  p=$(grep -cE '^ok ' "$1" || true)
  f=$(grep -cE '^not ok ' "$1" || true)
  pass=$((pass + p)) fail=$((fail + f))
}
"$build/test_core" > "$log/test_core.tap" 2>&1
rc=$?
grep -E '^not ok' "$log/test_core.tap" | sed 's/^/  /'
count_tap "$log/test_core.tap"
[ $rc -ne 0 ] && ! grep -q '^not ok' "$log/test_core.tap" && { echo "  test_core crashed"; fail=$((fail + 1)); }
for t in "$build"/fuzz/fuzz_*; do
  name=$(basename "$t")
  if "$t" "spec/fuzz/corpus/$name" > "$log/$name.log" 2>&1; then
    pass=$((pass + 1))
  else
    echo "  not ok - fuzz corpus of $name"; tail -5 "$log/$name.log" | sed 's/^/    /'; fail=$((fail + 1))
  fi
done
export SSHCHAIN_BUILD=$build
export LUA_CPATH="$PWD/$build/?.so;${LUA_CPATH:-;;}"
export LUA_PATH="$PWD/spec/?.lua;${LUA_PATH:-;;}"
timeout -k 5 120 "$runner" /usr/bin/busted --lpath="$PWD/spec/?.lua" -o TAP spec/unit \
  > "$log/unit.tap" 2> "$log/unit.stderr"
rc=$?
grep -vE '^(ok|1\.\.)' "$log/unit.tap" | sed 's/^/  /' | head -60
count_tap "$log/unit.tap"
[ $rc -ne 0 ] && ! grep -q '^not ok' "$log/unit.tap" && { echo "  busted failed ($rc)"; cat "$log/unit.stderr"; fail=$((fail + 1)); }
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
