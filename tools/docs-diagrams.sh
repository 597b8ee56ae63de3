#!/usr/bin/env bash
# docs-diagrams.sh RILL DOC OUT: runs the flows' tests with `rill test
# --diagrams` and writes DOC, with its sequence diagrams section made again
# from those runs (tools/docs-diagrams.lua), to OUT. `make docs` writes
# docs/company-flows.md over itself; tests/test_docs.py writes a temporary
# file and compares.
set -euo pipefail
rill=$1 doc=$2 out=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! "$rill" test --flows flows --diagrams "$tmp/diagrams" > "$tmp/test.log" 2>&1; then
  cat "$tmp/test.log"; echo "docs-diagrams: the flows' tests failed" >&2; exit 1
fi
"$rill" lua tools/docs-diagrams.lua "$tmp/diagrams" "$doc" > "$tmp/doc.md"
mv "$tmp/doc.md" "$out"
