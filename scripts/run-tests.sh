#!/usr/bin/env bash
# run-tests.sh BUILD: the whole suite. Runs the C unit tests and the fuzz corpora, starts the lab,
# runs every busted spec (the unit tier and the lab's), always stops the lab, runs each fuzz
# target briefly (FUZZ_SECONDS, 5 by default; 0 skips), and ends with one line
# "N passed, N failed".
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

echo "== fuzz corpora"
for t in "$build"/fuzz/fuzz_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  if "$t" "spec/fuzz/corpus/$name" > "$log/$name.log" 2>&1; then
    echo "  ok - $name: $(tail -1 "$log/$name.log" | sed 's/.*: //')"; pass=$((pass + 1))
  else
    echo "  not ok - $name"; tail -5 "$log/$name.log" | sed 's/^/    /'; fail=$((fail + 1))
  fi
done

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
specs=(${SPECS:-spec/unit/*_spec.lua spec/*_spec.lua})
timeout -k 10 1200 "$runner" /usr/bin/busted --lpath="$PWD/spec/?.lua" -o TAP "${specs[@]}" \
  < /dev/null > "$log/specs.tap" 2> "$log/specs.stderr"
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
cleanup

fuzz_seconds=${FUZZ_SECONDS:-5}
if [ "$fuzz_seconds" != 0 ] && [ -z "${SPECS:-}" ]; then
  echo "== fuzzing, ${fuzz_seconds} s a target"
  if make --no-print-directory fuzz FUZZ_SECONDS="$fuzz_seconds" > "$log/fuzz.log" 2>&1; then
    grep -A1 '^== ' "$log/fuzz.log" | grep -v '^--' | paste - - | sed 's/^== /  ok - /'
    pass=$((pass + $(grep -c '^== ' "$log/fuzz.log")))
  else
    echo "  not ok - fuzzing found a problem:"; tail -30 "$log/fuzz.log" | sed 's/^/    /'; fail=$((fail + 1))
  fi
fi
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
