#!/usr/bin/env bash
# expect.sh STATUS [--absent TEXT] [--line LINE] TEXT... -- COMMAND...
#
# Runs COMMAND (with a 60 s limit, so a hang fails instead of blocking CI) and
# passes when it exits with STATUS and its combined output contains each TEXT
# exactly once (exactly once: an error must be printed once per job, not once
# per rank), each --line LINE as a whole line exactly once, and no --absent
# TEXT at all.
set -u
status=$1; shift
expected=(); absent=(); lines=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  case $1 in
    --absent) absent+=("$2"); shift 2 ;;
    --line) lines+=("$2"); shift 2 ;;
    *) expected+=("$1"); shift ;;
  esac
done
[ $# -gt 0 ] && shift
output=$(timeout -k 5 60 "$@" 2>&1)
rc=$?
fail=0
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then echo "FAIL: timed out (hang?)"; fail=1; fi
if [ "$rc" -ne "$status" ]; then echo "FAIL: exit status $rc, expected $status"; fail=1; fi
for text in "${expected[@]}"; do
  count=$(grep -cF -- "$text" <<<"$output")
  [ "$count" -eq 1 ] || { echo "FAIL: expected exactly one line with: $text (found $count)"; fail=1; }
done
for line in "${lines[@]}"; do
  count=$(grep -cxF -- "$line" <<<"$output")
  [ "$count" -eq 1 ] || { echo "FAIL: expected exactly one whole line: $line (found $count)"; fail=1; }
done
for text in "${absent[@]}"; do
  grep -qF -- "$text" <<<"$output" && { echo "FAIL: unexpected: $text"; fail=1; }
done
if [ $fail -ne 0 ]; then
  echo "--- command: $*"; echo "--- output:"; echo "$output"
fi
exit $fail
