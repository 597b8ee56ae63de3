#!/usr/bin/env bash
# bench/abuse.sh: issue 13's "Done means" check. Builds rill with ASan and
# UBSan (build-asan/rill, as `make asan` does), serves three webhooks (sync,
# async, and a sync one whose run sleeps) from a temporary directory, runs
# bench/abuse.py against it for DURATION seconds (default 600), stops rill,
# and reports the sanitizers' errors (ASAN_OPTIONS log_path) and the normal
# requests' p99. Exit code 0 only with no sanitizer error, rill alive to
# the end and no failed normal request. Env: DURATION, ABUSE_ARGS (more
# options for abuse.py), KEEP=1 keeps the directory (logs, store), RILL=path
# serves with that binary as it is instead (e.g. build/rill: the same load
# on a build without sanitizers, to tell their cost from rill's).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
. "$here/lib.sh"
DURATION=${DURATION:-600}

if [ -n "${RILL:-}" ]; then
  rill=$(cd "$(dirname "$RILL")" && pwd)/$(basename "$RILL") # a build to compare with, as is
else
  make -s -C "$root" BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer" \
       SAN="-fsanitize=address,undefined -fno-sanitize-recover=all" build-asan/rill || exit 2
  rill=$root/build-asan/rill
fi

work=$(mktemp -d /tmp/rill-abuse-XXXXXX)
mkdir -p "$work/flows"
cat > "$work/flows/sync.lua" <<'LUA'
return {
  triggers = { webhook { method = "POST", path = "/hooks/sync" } },
  run = function(ctx) return { ok = true, id = ctx.payload.id } end,
}
LUA
cat > "$work/flows/async.lua" <<'LUA'
return {
  triggers = { webhook { method = "POST", path = "/hooks/async", mode = "async" } },
  run = function(ctx) return { stored = true } end,
}
LUA
cat > "$work/flows/sleep.lua" <<'LUA'
return {
  triggers = { webhook { method = "POST", path = "/hooks/sleep" } },
  run = function(ctx) sleep(0.05) return { slept = true } end,
}
LUA

port=$(free_port) admin=$(free_port)
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null
  [ "${KEEP:-0}" = 1 ] && echo "abuse: kept $work" || rm -rf "$work"
}
trap cleanup EXIT
# ASan's allocator gives freed pages back to the OS every 5 s by default
# (allocator_release_to_os_interval_ms): under this load each time is a
# madvise over its regions with a TLB shootdown on every core, which held
# the loop 70-300 ms at a time (perf: the longest loop turns were all
# internal_madvise under Quarantine::Recycle). That is the sanitizer's
# housekeeping, not rill's and not what ASan checks: it is off here, so that
# the p99 is rill's. ASAN_EXTRA adds options (later ones win, e.g.
# ASAN_EXTRA=allocator_release_to_os_interval_ms=5000 puts it back).
asan_options="log_path=$work/asan:detect_leaks=1:allocator_release_to_os_interval_ms=-1"
(cd "$work" && exec env ASAN_OPTIONS="$asan_options${ASAN_EXTRA:+:$ASAN_EXTRA}" \
   UBSAN_OPTIONS="log_path=$work/ubsan:print_stacktrace=1" RILL_LOG_LEVEL=warn \
   RILL_ADMIN_LISTEN="127.0.0.1:$admin" "$rill" serve --flows "$work/flows" \
   --listen "127.0.0.1:$port" > "$work/rill.log" 2>&1) &
pid=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.2; done
echo "abuse: $rill (pid $pid) on 127.0.0.1:$port, admin $admin, for $DURATION s; logs in $work"

# shellcheck disable=SC2086
python3 "$here/abuse.py" --port "$port" --admin-port "$admin" --pid "$pid" --duration "$DURATION" \
  --path /hooks/sync --abuse-path /hooks/sync --abuse-path /hooks/async --abuse-path /hooks/sleep \
  ${ABUSE_ARGS:-} | tee "$work/abuse.out"
abuse_rc=${PIPESTATUS[0]}

# how long the loop's turns were (rill_loop_busy_seconds): a long turn is
# latency for every client at once
if kill -0 "$pid" 2>/dev/null; then
  curl -s "http://127.0.0.1:$admin/metrics" | awk '
    /^rill_loop_busy_seconds_bucket/ { match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5); cum[le] = $2; order[n++] = le }
    /^rill_loop_busy_seconds_count/ { count = $2 }
    /^rill_loop_busy_seconds_sum/ { sum = $2 }
    END {
      if (!count) exit
      printf "abuse: loop turns %d, busy %.1f s; turns over:", count, sum
      for (i = 0; i < n; i++) if (order[i] != "+Inf" && order[i] + 0 >= 0.005) printf " %s s: %d", order[i], count - cum[order[i]]
      printf "\n"
    }'
fi

if kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$pid" 2>/dev/null && { echo "abuse: rill did not stop on SIGTERM in 20 s"; kill -KILL "$pid"; }
fi
wait "$pid" 2>/dev/null; rill_rc=$?; pid=
echo "abuse: rill exited with $rill_rc"

reports=$(ls "$work"/asan.* "$work"/ubsan.* 2>/dev/null)
if [ -n "$reports" ]; then
  echo "abuse: SANITIZER ERRORS ($(echo "$reports" | wc -l) reports):"
  for r in $reports; do
    echo "--- $r"
    grep -E "ERROR|SUMMARY|runtime error|^    #[0-9] " "$r" | head -25
  done
  KEEP=1
else
  echo "abuse: no ASan or UBSan error"
fi
grep -E "^RESULT" "$work/abuse.out" | sed "s/^RESULT/abuse: RESULT sanitizer_reports=$(echo -n "$reports" | grep -c .)/"
[ -z "$reports" ] && [ "$abuse_rc" -eq 0 ]
