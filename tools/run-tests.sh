#!/usr/bin/env bash
# Runs one kind of test suite and sums the "N passed, N failed" line that
# every suite prints last. Usage:
#   run-tests.sh c|valgrind BINARY...     C test programs (plain, or under valgrind)
#   run-tests.sh lua RILL FILE...         Lua tests, run by `rill lua`
#   run-tests.sh py FILE...               end-to-end tests (python3)
#   run-tests.sh flows RILL DIR           the flows' own tests (rill test)
#   run-tests.sh fuzz SECONDS DIR TARGET...  a smoke of each libFuzzer target (tools/fuzz.sh)
# Exits non-zero when any suite fails or prints no closing line.
set -uo pipefail
kind=$1; shift
passed=0; failed=0; broken=()
run_one() {  # name command...
  local name=$1; shift
  local out; out=$(mktemp)
  "$@" > "$out" 2>&1; local rc=$?
  local line; line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$out" | tail -n1)
  if [ -z "$line" ] || [ $rc -ne 0 ]; then
    broken+=("$name"); cat "$out"
  fi
  if [ -n "$line" ]; then
    local p f; p=${line%% passed*}; f=${line#*passed, }; f=${f%% failed*}
    passed=$((passed + p)); failed=$((failed + f))
    echo "  $kind $name: $line"
  else
    echo "  $kind $name: no closing line (exit $rc)"
  fi
  rm -f "$out"
}
case $kind in
  c) for t in "$@"; do run_one "$(basename "$t")" "$t"; done ;;
  valgrind)
    for t in "$@"; do
      run_one "$(basename "$t")" valgrind -q --fair-sched=yes --error-exitcode=99 --leak-check=full \
        --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect "$t"
    done ;;
  lua) rill=$1; shift
    for t in "$@"; do run_one "$(basename "$t")" "$rill" lua "$t"; done ;;
  py) for t in "$@"; do run_one "$(basename "$t")" python3 "$t"; done ;;
  flows) run_one "rill test $2" "$1" test --flows "$2" ;;
  fuzz) secs=$1 dir=$2; shift 2
    for t in "$@"; do run_one "$t" "$(dirname "$0")/fuzz.sh" smoke "$secs" "$dir" "$t"; done ;;
  *) echo "run-tests.sh: unknown kind $kind" >&2; exit 2 ;;
esac
echo "$kind: $passed passed, $failed failed"
# make test sums every suite's counts from this file into its closing line.
[ -n "${RILL_TEST_TOTALS:-}" ] && echo "$passed $failed" >> "$RILL_TEST_TOTALS"
[ ${#broken[@]} -eq 0 ] || { echo "$kind: failing suites: ${broken[*]}"; exit 1; }
