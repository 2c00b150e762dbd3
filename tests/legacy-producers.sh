#!/usr/bin/env bash
# Several of the original system's producers with -m at once, into `recv --legacy -m` and into
# the original C consumer: first-try rate and files committed twice (README, "Legacy mode").
#
#   tests/legacy-producers.sh ORIGINAL [RUNS]
#
# ORIGINAL: a checkout of github.com/marinoborges/producer-consumer-sysvipc. It is copied to a
# scratch folder with its keys moved off 42/44 (to 8000042/8000044, which must be free), and
# the consumer built there. Needs python3 with sysv_ipc (`pip install sysv_ipc`). Each of N
# producers sends its share of 60 text files (the producer dies on a reply that is not text),
# retrying a file until its producer exits 0; RUNS (2) runs of 2 and 4 producers, each mode.
set -euo pipefail
cd "$(dirname "$0")/.."
ORIG=$(realpath "${1:?usage: tests/legacy-producers.sh ORIGINAL [RUNS]}")
RUNS=${2:-2}
CK=8000042 SK=8000044
if ipcs | awk '{print $1}' | grep -qixE "$(printf '0x%08x|0x%08x' $CK $SK)"; then
    echo "keys $CK/$SK are in use" >&2; exit 1
fi
cargo build --quiet --release
BIN=$PWD/target/release/shmxfer
W=$(mktemp -d)
trap 'rm -rf "$W"; ipcrm -M $CK -M $SK -S $CK -S $SK 2>/dev/null || true' EXIT
cp -r "$ORIG/consumer-c" "$ORIG/producer-py" "$W/"
sed -i "s/_KEY 42/_KEY $CK/; s/_KEY 44/_KEY $SK/" "$W/consumer-c/consumer.c"
sed -i "s/_key = 42;/_key = $CK;/; s/_key = 44;/_key = $SK;/" "$W/producer-py/producer.py"
(cd "$W/consumer-c" && bash make_all.sh >/dev/null 2>&1)

# run MODE N: one run; prints "first-try ok attempts committed-twice never".
run() {
    local mode=$1 n=$2 d="$W/run" c
    rm -rf "$d"; mkdir -p "$d/in" "$d/output"; cd "$d"
    head -c 90000 /dev/urandom | base64 -w0 > text
    for i in $(seq -w 1 60); do
        # Each its own: a distinct prefix, then the shared text.
        { printf '%s ' "$i"; head -c $((20000 + 10#$i * 1009)) text; } > "in/f$i"
    done
    if [[ $mode == orig ]]; then
        "$W/consumer-c/consumer" -m > consumer.log 2>&1 & c=$!
    else
        "$BIN" recv --legacy -m -q --key $CK --size-key $SK --dir output > /dev/null 2>&1 & c=$!
    fi
    sleep 0.5
    local pids=()
    for p in $(seq 0 $((n - 1))); do
        (for i in $(seq -w 1 60); do
            (( (10#$i - 1) % n == p )) || continue
            for a in $(seq 1 30); do
                rc=0; timeout 20 python3 "$W/producer-py/producer.py" -m "in/f$i" > /dev/null 2>&1 || rc=$?
                echo "f$i $a $rc"
                (( rc == 0 || rc == 124 )) && break
            done
        done) > "p$p.log" & pids+=($!)
    done
    wait "${pids[@]}"
    sleep 0.5; kill $c; wait $c 2>/dev/null || true
    cat p*.log > attempts.log
    local first ok total twice=0 never=0
    first=$(awk '$2 == 1 && $3 == 0' attempts.log | wc -l)
    ok=$(awk '$3 == 0' attempts.log | wc -l)
    total=$(wc -l < attempts.log)
    declare -A seen=()
    for f in output/*; do
        [[ -f $f ]] || continue
        h=$(md5sum < "$f" | cut -c1-32); seen[$h]=$(( ${seen[$h]:-0} + 1 ))
    done
    for f in in/*; do
        h=$(md5sum < "$f" | cut -c1-32)
        (( ${seen[$h]:-0} > 1 )) && twice=$((twice + 1))
        (( ${seen[$h]:-0} == 0 )) && never=$((never + 1))
    done
    cd - > /dev/null
    echo "$first $ok $total $twice $never"
}

printf '%-8s %-10s %-22s %-10s %-8s %-16s %s\n' mode producers "first-try verified" verified attempts "committed twice" "never committed"
for r in $(seq 1 "$RUNS"); do
    for n in 2 4; do
        for mode in shmxfer orig; do
            read -r first ok total twice never < <(run $mode $n)
            printf '%-8s %-10s %-22s %-10s %-8s %-16s %s\n' $mode $n "$first/60" "$ok" "$total" "$twice" "$never"
        done
    done
done
