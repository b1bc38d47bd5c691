#!/usr/bin/env bash
# Runs `fluxgate check --format json` on every folder of a fleets corpus and prints one row per
# repository: objects, findings by rule, read errors, objects no cluster applies (notApplied
# notes), files skipped as not manifests (Helm charts, helmfiles, templates), wall time. Fails if a run crashes
# (exit codes 0, 1 and 2 are answers; anything else is a crash) or reports a cycle: none of the
# shared repositories has one.
set -euo pipefail
bin=$1
corpus=$2
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
failed=0
printf '%-40s %8s %6s %9s %6s %6s %6s %7s %7s %7s %8s\n' repository objects cycle dangling cross depth dup errors notappl skipped ms
for dir in "$corpus"/*/; do
  name=$(basename "$dir")
  start=$(date +%s%N)
  set +e
  "$bin" check "$dir" --format json >"$out/$name.json" 2>"$out/$name.err"
  code=$?
  set -e
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  if [ "$code" -gt 2 ]; then
    echo "$name: fluxgate check crashed (exit $code):"; cat "$out/$name.err"; failed=1; continue
  fi
  python3 - "$out/$name.json" "$name" "$ms" <<'PY' || failed=1
import json, sys
path, name, ms = sys.argv[1], sys.argv[2], sys.argv[3]
d = json.load(open(path))
count = lambda rule: sum(1 for f in d["findings"] if f["rule"] == rule)
print(f'{name:<40} {d["objects"]:>8} {count("cycle"):>6} {count("danglingDependsOn"):>9} '
      f'{count("crossNamespaceDependsOn"):>6} {count("maxDepth"):>6} {count("duplicateDependsOn"):>6} '
      f'{len(d["errors"]):>7} {len(d["notApplied"]):>7} {d["skipped"]:>7} {ms:>8}')
for e in d["errors"]:
    print(f'    read error: {e["file"]}:{e["line"]}: {e["message"]}')
if count("cycle"):
    for f in d["findings"]:
        if f["rule"] == "cycle":
            print("    CYCLE (a bug: these repositories have none):", f["message"])
    sys.exit(1)
PY
done
exit $failed
