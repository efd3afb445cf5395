#!/usr/bin/env bash
# demo.sh BUILD: starts the lab, runs the demo through the jump hosts, always stops the lab.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
trap 'scripts/lab.sh down >/dev/null 2>&1 || true' EXIT INT TERM
scripts/lab.sh up
"$build/sshlua" scripts/demo.lua
