#!/usr/bin/env bash
# Runs the libFuzzer targets that `make fuzz-build` made (fuzz/README.md).
#   fuzz.sh run SECONDS DIR TARGET...   fuzz each target for SECONDS, keeping what
#                                       it learns in build-fuzz/corpus/<target>;
#                                       prints executions per target and in total
#   fuzz.sh smoke SECONDS DIR TARGET    for `make test`: every seed and saved crash
#                                       input (but those of fuzz/crashes/OPEN)
#                                       once, then 20,000 inputs (seed 1) or
#                                       SECONDS of fuzzing, whichever is first, on
#                                       a scratch corpus; prints "N passed, N failed"
# A crash is written to build-fuzz/crashes/<target>-crash-<sha1> (its input).
set -uo pipefail
mode=$1 seconds=$2 dir=$3; shift 3
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$root/build-fuzz/crashes"

# fuzz_one TARGET SECONDS CORPUS_DIR LOG [OPTION...]: runs libFuzzer; its exit code.
fuzz_one() {
  local t=$1 secs=$2 corpus=$3 log=$4; shift 4
  local opts=("$@" -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048
              -artifact_prefix="$root/build-fuzz/crashes/$t-")
  [ -f "$root/fuzz/$t.dict" ] && opts+=(-dict="$root/fuzz/$t.dict")
  [ -f "$root/fuzz/$t.options" ] && read -r -a extra < "$root/fuzz/$t.options" && opts+=("${extra[@]}")
  "$dir/$t" "${opts[@]}" "$corpus" "$root/fuzz/corpus/$t" > "$log" 2>&1
}

executions() { grep -o 'stat::number_of_executed_units: [0-9]*' "$1" | tail -n1 | grep -o '[0-9]*$' || echo 0; }

case $mode in
run)
  total=0 failed=0
  for t in "$@"; do
    mkdir -p "$root/build-fuzz/corpus/$t"
    log="$root/build-fuzz/$t.log"
    fuzz_one "$t" "$seconds" "$root/build-fuzz/corpus/$t" "$log"; rc=$?
    n=$(executions "$log"); total=$((total + n))
    if [ $rc -eq 0 ]; then
      echo "fuzz $t: $n executions in ${seconds} s ($((n / seconds))/s), no crash"
    else
      failed=$((failed + 1))
      echo "fuzz $t: $n executions, CRASH (exit $rc): $(grep -o "Test unit written to .*" "$log" | tail -n1), log $log"
      grep -m3 -E '^(fuzz:|==[0-9]+==ERROR|SUMMARY)' "$log" | sed 's/^/    /'
    fi
  done
  echo "fuzz: $total executions in total, $failed of $# targets crashed"
  [ $failed -eq 0 ] ;;
smoke)
  t=$1 passed=0 failed=0
  scratch=$(mktemp -d); trap 'rm -rf "$scratch"' EXIT
  # every seed and every saved crash input, once each
  inputs=("$root/fuzz/corpus/$t"/*)
  for f in "$root/fuzz/crashes/$t"/*; do  # but not the bugs still open (fuzz/crashes/OPEN)
    [ -f "$f" ] || continue
    grep -qx "$t/$(basename "$f")" "$root/fuzz/crashes/OPEN" 2>/dev/null || inputs+=("$f")
  done
  if "$dir/$t" -runs=1 -timeout=10 -artifact_prefix="$scratch/" "${inputs[@]}" > "$scratch/replay.log" 2>&1; then
    passed=$((passed + 1)); echo "replayed ${#inputs[@]} inputs"
  else
    failed=$((failed + 1)); echo "a saved input fails:"; tail -n 30 "$scratch/replay.log"
  fi
  # a fixed seed and count: the same inputs at every run, so that a smoke
  # cannot fail by chance (an open bug found now and then); time caps it
  if fuzz_one "$t" "$seconds" "$scratch" "$scratch/fuzz.log" -seed=1 -runs=20000; then
    passed=$((passed + 1)); echo "fuzzed $seconds s: $(executions "$scratch/fuzz.log") executions"
  else
    failed=$((failed + 1)); echo "fuzzing found a crash:"; tail -n 40 "$scratch/fuzz.log"
  fi
  echo "$passed passed, $failed failed" ;;
*) echo "fuzz.sh: unknown mode $mode" >&2; exit 2 ;;
esac
