#!/usr/bin/env bash
# Paired A/B of two builds on the small-file cases: runs A and B, N times (the pairs alternate
# which goes first: the second of a pair measured up to 6% slower here), each run with a
# receiver of its own build writing into a fresh directory from recycled memory (see
# tests/bench.sh, "Small files"), and prints the median of the per-pair ratios B/A. On this
# VM the cost of creating and writing a file drifts up to 3x within minutes, so a ratio of two
# runs seconds apart is the figure to trust, not either run's time.
#
#   tests/ab.sh DIR_A DIR_B [CASE] [N]
#
# DIR_A and DIR_B each hold a `shmxfer` and an `api_bench` (target/release and
# target/release/examples of a build; make the old one in a `git worktree`). CASE is `one`
# (one send of 200 files of 100 KB, the default), `loop` (200 sends, one file each) or `api`
# (the library in one process, from memory). N is the number of pairs (default 11).
# An A and a B that are the same directory with different environments also work:
# `A_ENV='SHMXFER_SPIN_US=0' B_ENV='SHMXFER_SPIN_US=50' tests/ab.sh d d one`. A_RECV and
# B_RECV add arguments to each side's receiver (`B_RECV='--slots 1'`). AB_DIR is where the
# inputs and outputs go (default /var/tmp).
set -euo pipefail

A=$1; B=$2; CASE=${3:-one}; N=${4:-11}
WORK=$(mktemp -d "${AB_DIR:-/var/tmp}/shmxfer-ab.XXXXXX")
KEY=$(printf '0x%x' $(( 0x72000000 | (($$ & 0xffff) << 8) )))
RPID=
cleanup() {
  [[ -n $RPID ]] && kill "$RPID" 2>/dev/null && wait "$RPID" 2>/dev/null
  "$A/shmxfer" clean --key "$KEY" --force -q 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/small"
for i in $(seq -w 1 200); do head -c 100000 /dev/urandom >"$WORK/small/f$i"; done

now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# One timed run of build DIR with environment ENV; prints nanoseconds per file.
run() {
  local dir=$1 envs=$2 rargs=$3 out t0 t1
  out=$(mktemp -d "$WORK/out.XXXXXX")
  env $envs "$dir/shmxfer" recv --key "$KEY" --dir "$out" -q $rargs & RPID=$!
  sleep 0.3
  head -c 64000000 /dev/zero >"$WORK/ballast"; rm -f "$WORK/ballast"; sync
  t0=$(now)
  case $CASE in
    one) env $envs "$dir/shmxfer" send --key "$KEY" "$WORK"/small/* ;;
    loop) for f in "$WORK"/small/*; do env $envs "$dir/shmxfer" send --key "$KEY" "$f"; done ;;
    api) env $envs "$dir/api_bench" "$KEY" 200 102400 >/dev/null ;;
    *) echo "unknown case $CASE" >&2; exit 2 ;;
  esac
  t1=$(now)
  kill "$RPID"; wait "$RPID" 2>/dev/null || true; RPID=
  [[ $(ls "$out" | wc -l) == 200 ]] || { echo "files missing in $out" >&2; exit 1; }
  echo $(( (t1 - t0) / 200 ))
}

TA=(); TB=(); RATIOS=()
# The second run of a pair measured up to 6% slower here, whichever build it was: the pairs
# alternate which build goes first.
for i in $(seq "$N"); do
  if (( i % 2 )); then
    a=$(run "$A" "${A_ENV:-}" "${A_RECV:-}"); b=$(run "$B" "${B_ENV:-}" "${B_RECV:-}")
  else
    b=$(run "$B" "${B_ENV:-}" "${B_RECV:-}"); a=$(run "$A" "${A_ENV:-}" "${A_RECV:-}")
  fi
  TA+=("$a"); TB+=("$b")
  RATIOS+=("$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", b/a}')")
done
us() { awk -v n="$1" 'BEGIN {printf "%.1f", n/1000}'; }
echo "$CASE, $N pairs: A $(us "$(printf '%s\n' "${TA[@]}" | median)") µs/file, B $(us "$(printf '%s\n' "${TB[@]}" | median)") µs/file (medians)"
echo "B/A per pair: ${RATIOS[*]}"
echo "B/A, median of the pairs: $(printf '%s\n' "${RATIOS[@]}" | median)"
