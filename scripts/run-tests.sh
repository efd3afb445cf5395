#!/usr/bin/env bash
# run-tests.sh BUILD: the whole suite. Starts the lab, runs the C unit tests and every busted spec
# against it, always stops the lab, and ends with one line "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
runner=${SSHCHAIN_RUNNER:-lua5.4}   # the interpreter busted runs in (sshlua for ASan runs)
pass=0 fail=0
log=$build/test-logs
mkdir -p "$log"

count_tap() { # file -> adds to pass/fail
  local p f
  p=$(grep -cE '^ok ' "$1" || true)
  f=$(grep -cE '^not ok ' "$1" || true)
  pass=$((pass + p)) fail=$((fail + f))
}

cleanup() { scripts/lab.sh down >/dev/null 2>&1 || true; }
trap cleanup EXIT INT TERM

echo "== C unit tests"
"$build/test_core" > "$log/test_core.tap" 2>&1
rc=$?
cat "$log/test_core.tap" | grep -E '^(not )?ok' | sed 's/^/  /'
count_tap "$log/test_core.tap"
[ $rc -ne 0 ] && ! grep -q '^not ok' "$log/test_core.tap" && fail=$((fail + 1))

echo "== lab"
if ! scripts/lab.sh up; then
  echo "lab failed to start"
  echo "$pass passed, $((fail + 1)) failed"
  exit 1
fi

echo "== specs"
export SSHCHAIN_BUILD=$build
export LUA_CPATH="$PWD/$build/?.so;${LUA_CPATH:-;;}"
export LUA_PATH="$PWD/spec/?.lua;${LUA_PATH:-;;}"
specs=(${SPECS:-spec/*_spec.lua})
timeout -k 10 1200 "$runner" /usr/bin/busted --lpath="$PWD/spec/?.lua" -o TAP "${specs[@]}" \
  > "$log/specs.tap" 2> "$log/specs.stderr"
rc=$?
grep -vE '^(ok|not ok) ' "$log/specs.tap" | grep -v '^1\.\.' | sed 's/^/  /' | head -200
grep -E '^(not )?ok ' "$log/specs.tap" | sed 's/^/  /'
count_tap "$log/specs.tap"
if [ -s "$log/specs.stderr" ]; then
  echo "-- stderr of the spec run:"; head -100 "$log/specs.stderr" | sed 's/^/  /'
fi
if grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$log/specs.stderr"; then
  echo "sanitizer reported errors"; fail=$((fail + 1))
fi
if [ $rc -ne 0 ] && ! grep -q '^not ok' "$log/specs.tap"; then
  echo "busted exited with $rc without a failing test (crash or timeout)"; fail=$((fail + 1))
fi
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
