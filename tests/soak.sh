#!/usr/bin/env bash
# Soak: thousands of transfers of random sizes with random kills of either side, then checks
#  - every transfer whose `send` exited 0 arrived byte-identical;
#  - every file in the output directory is whole (identical to its input), none partial;
#  - no temporary file is left, and no IPC object leaks.
#
#   tests/soak.sh [TRANSFERS]     (default 2000; SEED=n for a repeatable run)
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-2000}
SEED=${SEED:-$$}
RANDOM=$SEED
cargo build --release --quiet
BIN=$PWD/target/release/shmxfer
WORK=$(mktemp -d /var/tmp/shmxfer-soak.XXXXXX)
KEY=$(printf '0x%x' $(( 0x71000000 | (($$ & 0xffff) << 8) )))
OUT=$WORK/out
mkdir -p "$WORK/in" "$OUT"
RPID=
start_recv() {
  # Every other receiver writes O_DIRECT (auto needs bigger files than these to switch).
  local direct=auto; (( RANDOM % 2 )) && direct=always
  "$BIN" recv --key "$KEY" --dir "$OUT" --keep-name -q --slot-size 64K --slots 4 --direct="$direct" 2>>"$WORK/recv.err" &
  RPID=$!
  for _ in $(seq 200); do "$BIN" status --json --key "$KEY" 2>/dev/null | grep -q '"state": "idle"' && return; sleep 0.01; done
  echo "receiver did not come up"; exit 1
}
cleanup() {
  [[ -n $RPID ]] && kill "$RPID" 2>/dev/null || true
  wait 2>/dev/null || true
  "$BIN" clean --key "$KEY" --force -q 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# A pool of inputs; sizes skewed small, with the edge cases (0, a slot, a slot +1) and some MiB.
sizes=(0 1 65535 65536 65537 262144 262145)
for i in $(seq 0 63); do
  if (( i < ${#sizes[@]} )); then n=${sizes[i]}; else n=$(( (RANDOM * 32768 + RANDOM) % (i < 48 ? 200000 : 3000000) )); fi
  head -c "$n" /dev/urandom >"$WORK/in/p$i"
done

echo "soak: $N transfers, seed $SEED, key $KEY"
start_recv
ok=0; failed=0; killed_s=0; killed_r=0; restarts=0
declare -A sent_ok
t0=$(date +%s)
for t in $(seq -w 1 "$N"); do
  src="$WORK/in/p$(( RANDOM % 64 ))"
  name="t$t"
  ln -sf "$src" "$WORK/in/$name"
  dice=$(( RANDOM % 100 ))
  if (( dice < 8 )); then
    # Kill the sender partway through.
    "$BIN" send --key "$KEY" --wait 10 -q -m "$WORK/in/$name" 2>/dev/null &
    sp=$!
    sleep "0.00$(( RANDOM % 10 ))"
    sigs=(KILL INT TERM); kill -"${sigs[RANDOM % 3]}" "$sp" 2>/dev/null || true
    if wait "$sp" 2>/dev/null; then sent_ok[$name]=$src; ok=$((ok + 1)); else killed_s=$((killed_s + 1)); fi
  elif (( dice < 12 )); then
    # Kill the receiver partway through; a new one takes the key over.
    "$BIN" send --key "$KEY" --wait 10 -q -m "$WORK/in/$name" 2>/dev/null &
    sp=$!
    sleep "0.00$(( RANDOM % 10 ))"
    sigs=(KILL TERM); kill -"${sigs[RANDOM % 2]}" "$RPID" 2>/dev/null || true
    wait "$RPID" 2>/dev/null || true
    if wait "$sp" 2>/dev/null; then sent_ok[$name]=$src; ok=$((ok + 1)); else killed_r=$((killed_r + 1)); fi
    start_recv; restarts=$((restarts + 1))
  else
    md5=""; (( RANDOM % 2 )) && md5=-m
    if "$BIN" send --key "$KEY" --wait 10 -q $md5 "$WORK/in/$name" 2>>"$WORK/send.err"; then
      sent_ok[$name]=$src; ok=$((ok + 1))
    else
      failed=$((failed + 1))
    fi
  fi
done
elapsed=$(( $(date +%s) - t0 ))
kill -TERM "$RPID"; wait "$RPID" 2>/dev/null || true; RPID=

bad=0; missing=0; partial=0; stray=0
for name in "${!sent_ok[@]}"; do
  if [[ ! -e "$OUT/$name" ]]; then missing=$((missing + 1)); echo "MISSING: $name"; continue; fi
  cmp -s "$OUT/$name" "${sent_ok[$name]}" || { bad=$((bad + 1)); echo "DIFFERS: $name"; }
done
for f in "$OUT"/* "$OUT"/.[!.]*; do
  [[ -e $f ]] || continue
  base=$(basename "$f")
  case $base in
    .shmxfer-*) stray=$((stray + 1)); echo "TEMPORARY FILE LEFT: $base" ;;
    t*)
      # Committed though its sender saw a failure (killed after the commit): must still be whole.
      cmp -s "$f" "$(readlink -f "$WORK/in/${base%%-*}")" || { partial=$((partial + 1)); echo "PARTIAL: $base"; } ;;
    *) stray=$((stray + 1)); echo "UNEXPECTED FILE: $base" ;;
  esac
done
leaks=$(ipcs -m -s | awk -v a="$(printf '0x%08x' "$KEY")" -v b="$(printf '0x%08x' $((KEY + 1)))" '$1 == a || $1 == b' | wc -l)
committed=$(ls "$OUT" | wc -l)

echo "transfers: $N in ${elapsed}s; send exit 0: $ok; failed without a kill: $failed;" \
  "sender killed: $killed_s; receiver killed: $killed_r (restarts: $restarts)"
echo "files committed: $committed (of which reported to the sender as failed: $((committed - ok)))"
echo "checks: differing $bad, missing $missing, partial $partial, temporary/stray $stray, leaked IPC objects $leaks"
(( bad + missing + partial + stray + leaks == 0 )) || { echo "SOAK FAILED"; exit 1; }
echo "soak passed"
