#!/usr/bin/env bash
# Style is checked by tools, not by review: clang-format on the C sources.
# (Lua files are compiled by tools/check-lua.lua, run by make test once rill
# is built.)
set -euo pipefail
cd "$(dirname "$0")/.."
files=$(ls runtime/*.c runtime/*.h tests/*.c tests/*.h tools/*.c fuzz/*.c fuzz/*.h 2>/dev/null)
bad=0
for f in $files; do
  if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
    echo "lint: $f is not clang-formatted (run: make format)"; bad=1
  fi
done
[ $bad -eq 0 ] && echo "lint: $(echo "$files" | wc -w) C files formatted"
exit $bad
