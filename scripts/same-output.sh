#!/usr/bin/env bash
# same-output.sh: does a refactoring leave fluxgate's offline output unchanged?
#
# Runs two fluxgate binaries (say one built before a restructuring and one after) on every
# repository folder of a fleets corpus with identical arguments:
#   check --format json     graph     graph --format mermaid (when both binaries have it)
# and compares stdout byte for byte and the exit code. Prints one line per difference (repository,
# command, where the output first differs; stderr is kept, not compared) and the summary line
#   N repositories, M commands compared, K differences
# Exit 0 when every output is identical, 1 on any difference or crash (an exit code other than
# 0, 1 findings, or 2 unreadable input, in either binary), 2 on bad usage.
#
# Usage: scripts/same-output.sh OLD_BINARY NEW_BINARY [FLEETS_DIR]
#   FLEETS_DIR defaults to ../shared/fleets beside the repository root.
#   Build each side with `git worktree add` of its commit and `cargo build --bin fluxgate`.
#   KEEP=1 keeps the outputs (they are kept anyway when something differs).
set -uo pipefail
export LC_ALL=C

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0" >&2
  exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
abs() { (cd "$(dirname "$1")" && printf '%s/%s\n' "$(pwd)" "$(basename "$1")"); }
old=$(abs "$1") || exit 2
new=$(abs "$2") || exit 2
fleets=${3:-$root/../shared/fleets}
for b in "$old" "$new"; do
  [ -x "$b" ] || { echo "same-output: $b is not an executable" >&2; exit 2; }
done
[ -d "$fleets" ] || { echo "same-output: $fleets is not a folder" >&2; exit 2; }
fleets=$(cd "$fleets" && pwd)

out=$(mktemp -d "${TMPDIR:-/tmp}/same-output.XXXXXX")
trap 'rm -rf "$out"; exit 130' INT TERM
commands=("check --format json" "graph")
mermaid() { [[ $("$1" graph --help 2>&1) == *mermaid* ]]; }
if mermaid "$old" && mermaid "$new"; then
  commands+=("graph --format mermaid")
elif mermaid "$old" || mermaid "$new"; then
  echo "note: only one binary has graph --format mermaid; not compared"
fi

# Runs one side; writes NAME.out, NAME.err, NAME.code and adds the wall time to the side's total.
declare -A ms=([old]=0 [new]=0)
run() { # side binary stem args...
  local side=$1 bin=$2 stem=$3 start
  shift 3
  start=$(date +%s%N)
  "$bin" "$@" >"$stem.$side.out" 2>"$stem.$side.err" </dev/null
  echo $? >"$stem.$side.code"
  ms[$side]=$(( ms[$side] + ($(date +%s%N) - start) / 1000000 ))
}

# Where two outputs first differ, on one line: the line number and 90 bytes of each side, from
# 30 bytes before the first differing byte.
excerpt() { # old new
  local at byte line changed
  at=$(cmp "$1" "$2" 2>&1 | head -n 1)
  changed=$(diff "$1" "$2" | grep -c '^[<>]')
  case $at in
    *"EOF on"*)
      echo "one is a prefix of the other (old $(wc -c <"$1") bytes, new $(wc -c <"$2") bytes); $changed lines differ"
      return ;;
  esac
  byte=$(sed -n 's/.*differ: \(byte\|char\) \([0-9]*\), line \([0-9]*\).*/\2/p' <<<"$at")
  line=$(sed -n 's/.*differ: \(byte\|char\) \([0-9]*\), line \([0-9]*\).*/\3/p' <<<"$at")
  local from=$(( ${byte:-1} > 30 ? byte - 30 : 1 ))
  show() { tail -c +"$from" "$1" | head -c 90 | tr '\n\t' '  '; }
  echo "line $line: old «$(show "$1")» new «$(show "$2")»; $changed lines differ"
}

repos=0 compared=0 differences=0 crashes=0
started=$(date +%s%N)
for dir in "$fleets"/*/; do
  dir=${dir%/}
  name=$(basename "$dir")
  repos=$((repos + 1))
  mkdir -p "$out/$name"
  i=0
  for cmd in "${commands[@]}"; do
    i=$((i + 1))
    read -r -a args <<<"$cmd"
    sub=${args[0]}
    stem="$out/$name/$i"
    echo "$cmd" >"$stem.cmd"
    run old "$old" "$stem" "$sub" "$dir" "${args[@]:1}"
    run new "$new" "$stem" "$sub" "$dir" "${args[@]:1}"
    compared=$((compared + 1))
    oc=$(<"$stem.old.code") nc=$(<"$stem.new.code")
    for side in old new; do
      code=$(<"$stem.$side.code")
      if [ "$code" -gt 2 ]; then
        crashes=$((crashes + 1))
        echo "CRASH $name: $cmd: $side binary exit $code: $(head -c 300 "$stem.$side.err" | tr '\n' ' ')"
      fi
    done
    what=()
    [ "$oc" = "$nc" ] || what+=("exit $oc vs $nc")
    cmp -s "$stem.old.out" "$stem.new.out" || what+=("stdout $(excerpt "$stem.old.out" "$stem.new.out")")
    if [ ${#what[@]} -gt 0 ]; then
      differences=$((differences + 1))
      line=${what[0]}
      [ ${#what[@]} -lt 2 ] || line="$line; ${what[1]}"
      echo "DIFF $name: $cmd: $line"
    fi
  done
done
total=$(( ($(date +%s%N) - started) / 1000000 ))

printf 'time: old %d.%03ds, new %d.%03ds, wall %d.%03ds\n' \
  $((ms[old] / 1000)) $((ms[old] % 1000)) $((ms[new] / 1000)) $((ms[new] % 1000)) $((total / 1000)) $((total % 1000))
if [ $differences -gt 0 ] || [ $crashes -gt 0 ] || [ "${KEEP:-0}" = 1 ]; then
  echo "outputs kept in $out (REPO/N.{cmd,old.out,new.out,old.err,new.err,old.code,new.code})"
else
  rm -rf "$out"
fi
[ $crashes -eq 0 ] || echo "$crashes crashes"
echo "$repos repositories, $compared commands compared, $differences differences"
[ $differences -eq 0 ] && [ $crashes -eq 0 ]
