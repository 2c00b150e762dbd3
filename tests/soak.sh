#!/usr/bin/env bash
# Soak: thousands of sends of one to four files of random sizes, with random kills and
# interrupts of either side, a receiver stopped (SIGSTOP) for a while, and failures in the middle
# of a file (receivers started under a file-size limit, inputs that shrink or are rewritten in
# place while sent), then checks
#  - every file of a `send` that exited 0 arrived byte-identical;
#  - every file in the output directory is whole (identical to its input), none partial, none
#    holding another file's bytes (each send's later files follow a failed one on the ring);
#  - no temporary file is left, and no IPC object leaks.
#
#   tests/soak.sh [SENDS]     (default 2000; SEED=n for a repeatable run)
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
LIMITED=0
start_recv() {
  # Every other receiver writes O_DIRECT (auto needs bigger files than these to switch); one in
  # three runs under a 1 MB file-size limit, so larger files fail mid-stream with EFBIG.
  local direct=auto; (( RANDOM % 2 )) && direct=always
  local limit=(); LIMITED=0
  if (( RANDOM % 3 == 0 )); then limit=(prlimit --fsize=1000000); LIMITED=1; fi
  "${limit[@]}" "$BIN" recv --key "$KEY" --dir "$OUT" --keep-name -q --slot-size 64K --slots 4 --direct="$direct" 2>>"$WORK/recv.err" &
  RPID=$!
  for _ in $(seq 200); do "$BIN" status --json --key "$KEY" 2>/dev/null | grep -q '"state": "idle"' && return; sleep 0.01; done
  echo "receiver did not come up"; exit 1
}
cleanup() {
  # A sender killed between fork and exec runs this trap in its subshell: only the script
  # itself cleans up.
  [[ $BASHPID == "$$" ]] || return 0
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

echo "soak: $N sends, seed $SEED, key $KEY"
start_recv
ok=0; failed=0; killed_s=0; killed_r=0; restarts=0; shrunk=0; rewritten=0; stopped=0; files_sent=0
declare -A sent_ok alt
matches() { cmp -s "$1" "$2" || { [[ -n ${alt[$3]:-} ]] && cmp -s "$1" "${alt[$3]}"; }; }
t0=$(date +%s)
for t in $(seq -w 1 "$N"); do
  # One to four files; names tNNNN_J (a clash adds -K, which the checks strip).
  files=(); nfiles=$(( 1 + RANDOM % 4 ))
  for j in $(seq 1 "$nfiles"); do
    src="$WORK/in/p$(( RANDOM % 64 ))"
    ln -sf "$src" "$WORK/in/t${t}_$j"
    files+=("$WORK/in/t${t}_$j")
  done
  files_sent=$((files_sent + nfiles))
  md5=""; (( RANDOM % 2 )) && md5=-m
  dice=$(( RANDOM % 100 ))
  if (( dice < 8 )); then
    # Kill or interrupt the sender partway through.
    "$BIN" send --key "$KEY" --wait 10 -q $md5 "${files[@]}" 2>/dev/null &
    sp=$!
    sleep "0.00$(( RANDOM % 10 ))"
    sigs=(KILL INT TERM); kill -"${sigs[RANDOM % 3]}" "$sp" 2>/dev/null || true
    if wait "$sp" 2>/dev/null; then for f in "${files[@]}"; do sent_ok[$(basename "$f")]=$(readlink -f "$f"); done; ok=$((ok + 1)); else killed_s=$((killed_s + 1)); fi
  elif (( dice < 12 )); then
    # Kill the receiver partway through; a new one takes the key over.
    "$BIN" send --key "$KEY" --wait 10 -q $md5 "${files[@]}" 2>/dev/null &
    sp=$!
    sleep "0.00$(( RANDOM % 10 ))"
    sigs=(KILL TERM); kill -"${sigs[RANDOM % 2]}" "$RPID" 2>/dev/null || true
    wait "$RPID" 2>/dev/null || true
    if wait "$sp" 2>/dev/null; then for f in "${files[@]}"; do sent_ok[$(basename "$f")]=$(readlink -f "$f"); done; ok=$((ok + 1)); else killed_r=$((killed_r + 1)); fi
    start_recv; restarts=$((restarts + 1))
  elif (( dice < 15 )); then
    # Stop the receiver (SIGSTOP) for up to 1.5 s partway through, then continue it: the send
    # waits it out and succeeds.
    "$BIN" send --key "$KEY" --wait 10 -q $md5 "${files[@]}" 2>>"$WORK/send.err" &
    sp=$!
    sleep "0.00$(( RANDOM % 10 ))"
    kill -STOP "$RPID" 2>/dev/null || true
    sleep "$(( RANDOM % 2 )).$(( RANDOM % 5 ))"
    kill -CONT "$RPID" 2>/dev/null || true
    stopped=$((stopped + 1))
    if wait "$sp"; then for f in "${files[@]}"; do sent_ok[$(basename "$f")]=$(readlink -f "$f"); done; ok=$((ok + 1)); else failed=$((failed + 1)); fi
  else
    # The first file may be a private copy of a large input that shrinks, or is rewritten in
    # place (same size), while it is sent.
    if (( dice < 20 )) && (( RANDOM % 2 )); then
      first="$WORK/in/t${t}_1"; orig="$WORK/in/p$(( 48 + RANDOM % 16 ))"
      rm -f "$first"; cp "$orig" "$first"
      # It arrives whole as it was before the rewrite or after it, or not at all.
      alt[t${t}_1]=$orig
      size=$(stat -c %s "$first")
      ( sleep "0.00$(( RANDOM % 5 ))"; printf 'REWRITTEN' | dd of="$first" bs=1 seek=$(( (RANDOM * 32768 + RANDOM) % (size + 1) )) conv=notrunc status=none 2>/dev/null; truncate -s "$size" "$first" ) &
      tp=$!
      rewritten=$((rewritten + 1))
    elif (( dice < 20 )); then
      first="$WORK/in/t${t}_1"; orig="$WORK/in/p$(( 48 + RANDOM % 16 ))"
      rm -f "$first"; cp "$orig" "$first"
      # It arrives whole as it was before the cut or after it, or not at all.
      alt[t${t}_1]=$orig
      ( sleep "0.00$(( RANDOM % 5 ))"; truncate -s "$(( RANDOM % 1000 ))" "$first" ) &
      tp=$!
      shrunk=$((shrunk + 1))
    fi
    if "$BIN" send --key "$KEY" --wait 10 -q $md5 "${files[@]}" 2>>"$WORK/send.err"; then
      for f in "${files[@]}"; do sent_ok[$(basename "$f")]=$(readlink -f "$f"); done; ok=$((ok + 1))
    else
      failed=$((failed + 1))
    fi
    [[ -n ${tp:-} ]] && wait "$tp"; tp=
  fi
  # Under a file-size limit, receivers are replaced now and then so large files also land.
  if (( LIMITED && RANDOM % 20 == 0 )); then kill -TERM "$RPID"; wait "$RPID" 2>/dev/null || true; start_recv; restarts=$((restarts + 1)); fi
done
elapsed=$(( $(date +%s) - t0 ))
kill -TERM "$RPID"; wait "$RPID" 2>/dev/null || true; RPID=

bad=0; missing=0; partial=0; stray=0
for name in "${!sent_ok[@]}"; do
  if [[ ! -e "$OUT/$name" ]]; then missing=$((missing + 1)); echo "MISSING: $name"; continue; fi
  matches "$OUT/$name" "${sent_ok[$name]}" "$name" || { bad=$((bad + 1)); echo "DIFFERS: $name"; }
done
for f in "$OUT"/* "$OUT"/.[!.]*; do
  [[ -e $f ]] || continue
  base=$(basename "$f")
  case $base in
    .shmxfer-*) stray=$((stray + 1)); echo "TEMPORARY FILE LEFT: $base" ;;
    t*)
      # Committed though its send failed (a later file failed, or killed after the commit):
      # must still be whole, and its own bytes.
      matches "$f" "$(readlink -f "$WORK/in/${base%%-*}")" "${base%%-*}" || { partial=$((partial + 1)); echo "PARTIAL OR WRONG: $base"; } ;;
    *) stray=$((stray + 1)); echo "UNEXPECTED FILE: $base" ;;
  esac
done
leaks=$(ipcs -m -s | awk -v a="$(printf '0x%08x' "$KEY")" -v b="$(printf '0x%08x' $((KEY + 1)))" '$1 == a || $1 == b' | wc -l)
committed=$(ls "$OUT" | wc -l)

echo "sends: $N ($files_sent files) in ${elapsed}s; send exit 0: $ok; failed without a kill: $failed" \
  "(inputs shrunk mid-send: $shrunk, rewritten in place: $rewritten; receivers under a file-size limit among restarts);" \
  "receiver stopped and continued mid-send: $stopped;" \
  "sender killed or interrupted: $killed_s; receiver killed: $killed_r (restarts: $restarts)"
echo "files committed: $committed (of which in sends that did not exit 0: $((committed - ${#sent_ok[@]})))"
echo "checks: differing $bad, missing $missing, partial $partial, temporary/stray $stray, leaked IPC objects $leaks"
(( bad + missing + partial + stray + leaks == 0 )) || { echo "SOAK FAILED"; exit 1; }
echo "soak passed"
