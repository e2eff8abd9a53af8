#!/usr/bin/env bash
# scripts/delta-bench.sh CORPUS_DIR [OUT_DIR]
#
# Delta benchmark on the corpus built by ../shared/corpus/fetch.sh (pairs in CORPUS_DIR/pairs/<name>/{old,new}).
# For each pair: full size, zstd -19 size, and for wardswarm (format 4, the default; and format 3,
# `--codec lzma2`, as wardswarm-lzma2), bsdiff, xdelta3 -9 -S djw
# and zstd -19 --long=31 --patch-from: delta size, create time, apply time, peak RSS of create and apply
# (GNU time's maximum resident set size), and a check that the applied output equals the new image.
# Needs: bsdiff, xdelta3, zstd, time (apt-get install bsdiff xdelta3 zstd time) and a release build of
# wardswarm (cargo build --release). Prints a Markdown table.
#
# Debian's bsdiff sorts suffixes with qsufsort, which takes hours on a disk image with long zero runs.
# It runs under a time limit (BSDIFF_TIMEOUT seconds, default 3600). The row "bsdiff-sa" is bsdiff 4.3's
# patch computed with a divsufsort suffix array (scripts/bsdiff-sa.c, built here if cc, libbz2-dev and
# libdivsufsort-dev are present): the last column says whether it is byte-identical to Debian's bsdiff
# where that finished, and its patch is applied with Debian's bspatch. It runs under the same limit: on
# long zero runs bsdiff's scan itself is quadratic. If qbsdiff is on PATH (cargo install qbsdiff
# --features cmd), it adds a row: a bsdiff-format diff that finishes on disk images, applied with
# Debian's bspatch. If HDIFFZ names an hdiffz binary (HDiffPatch, built from its public source; hpatchz
# beside it), it adds two rows: hdiffz -m-6 -SD -c-lzma2-9-16m and hdiffz -m-6 -c-lzma2-9-16m.
set -euo pipefail
CORPUS=${1:?usage: $0 CORPUS_DIR [OUT_DIR]}
OUT=${2:-$(mktemp -d)}
HERE=$(cd "$(dirname "$0")/.." && pwd)
WS=${WARDSWARM:-$HERE/target/release/wardswarm}
mkdir -p "$OUT"
BSDIFF_TIMEOUT=${BSDIFF_TIMEOUT:-3600}
SA=""
if command -v cc >/dev/null && cc -O2 -I/usr/include/x86_64-linux-gnu -o "$OUT/bsdiff-sa" \
    "$HERE/scripts/bsdiff-sa.c" -ldivsufsort -lbz2 2>"$OUT/bsdiff-sa.build.err"; then
    SA="$OUT/bsdiff-sa"
else
    echo "bsdiff-sa not built (needs cc, libbz2-dev, libdivsufsort-dev): $(cat "$OUT/bsdiff-sa.build.err")" >&2
fi
for t in bsdiff bspatch xdelta3 zstd /usr/bin/time "$WS"; do
    command -v "$t" >/dev/null || { echo "missing: $t" >&2; exit 1; }
done

# run NAME CMD...: runs CMD under GNU time; prints "seconds maxrss_kib"
run() {
    local log="$OUT/$1.time"; shift
    /usr/bin/time -f '%e %M' -o "$log" "$@" >/dev/null 2>"$OUT/last.err" || { cat "$OUT/last.err" >&2; return 1; }
    cat "$log"
}

mib() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1048576 }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a * 100 / b }'; }

echo "| pair | tool | new size MiB | zstd -19 MiB | delta MiB | delta % of new | create s | create peak MiB | apply s | apply peak MiB | output ok |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for dir in "$CORPUS"/pairs/*/; do
    name=$(basename "$dir")
    old="$dir/old"; new="$dir/new"
    [ -f "$old" ] && [ -f "$new" ] || continue
    size=$(stat -c %s "$new")
    zstd -q -19 -T1 -f "$new" -o "$OUT/$name.zst"
    zsize=$(stat -c %s "$OUT/$name.zst")
    QB=""; command -v qbsdiff >/dev/null && QB=qbsdiff
    HD=""; [ -n "${HDIFFZ:-}" ] && HD="hdiffz-sd hdiffz"
    for tool in wardswarm wardswarm-lzma2 bsdiff ${SA:+bsdiff-sa} $QB $HD xdelta3 zstd-patch-from; do
        d="$OUT/$name.$tool.delta"; o="$OUT/$name.$tool.out"
        rm -f "$d" "$o"
        if [ "$tool" = bsdiff ] || [ "$tool" = bsdiff-sa ]; then
            exe=bsdiff; [ "$tool" = bsdiff-sa ] && exe=$SA
            if ! c=$(run "$name.$tool.create" timeout "$BSDIFF_TIMEOUT" "$exe" "$old" "$new" "$d"); then
                why="failed (see $OUT/$name.$tool.create.time)"
                grep -q 'status 124' "$OUT/$name.$tool.create.time" && why="did not finish in $BSDIFF_TIMEOUT s"
                echo "| $name | $tool | $(mib "$size") | $(mib "$zsize") | $why | | | | | | |"
                rm -f "$d"
                continue
            fi
        fi
        case $tool in
            wardswarm)
                c=$(run "$name.$tool.create" "$WS" delta create --base "$old" --target "$new" --out "$d")
                a=$(run "$name.$tool.apply" "$WS" delta apply --base "$old" --delta "$d" --out "$o") ;;
            wardswarm-lzma2)
                c=$(run "$name.$tool.create" "$WS" delta create --codec lzma2 --base "$old" --target "$new" --out "$d")
                a=$(run "$name.$tool.apply" "$WS" delta apply --base "$old" --delta "$d" --out "$o") ;;
            bsdiff|bsdiff-sa)
                a=$(run "$name.$tool.apply" bspatch "$old" "$o" "$d") ;;
            qbsdiff)
                c=$(run "$name.$tool.create" qbsdiff "$old" "$new" "$d")
                a=$(run "$name.$tool.apply" bspatch "$old" "$o" "$d") ;;
            xdelta3)
                c=$(run "$name.$tool.create" xdelta3 -9 -S djw -f -e -s "$old" "$new" "$d")
                a=$(run "$name.$tool.apply" xdelta3 -f -d -s "$old" "$d" "$o") ;;
            hdiffz-sd|hdiffz)
                sd=""; [ "$tool" = hdiffz-sd ] && sd=-SD
                c=$(run "$name.$tool.create" "$HDIFFZ" -m-6 $sd -c-lzma2-9-16m -f "$old" "$new" "$d")
                a=$(run "$name.$tool.apply" "$(dirname "$HDIFFZ")/hpatchz" -f "$old" "$d" "$o") ;;
            zstd-patch-from)
                c=$(run "$name.$tool.create" zstd -q -19 -T1 --long=31 -f --patch-from="$old" "$new" -o "$d")
                a=$(run "$name.$tool.apply" zstd -q -d --long=31 -f --patch-from="$old" "$d" -o "$o") ;;
        esac
        dsize=$(stat -c %s "$d")
        ok=no; cmp -s "$o" "$new" && ok=yes
        if [ "$tool" = bsdiff-sa ]; then
            if [ -f "$OUT/$name.bsdiff.delta" ]; then
                cmp -s "$d" "$OUT/$name.bsdiff.delta" && ok="$ok; identical to bsdiff" || ok="$ok; DIFFERS from bsdiff"
            else
                ok="$ok; bsdiff did not finish"
            fi
        fi
        read -r cs cm <<<"$c"; read -r as am <<<"$a"
        echo "| $name | $tool | $(mib "$size") | $(mib "$zsize") | $(mib "$dsize") | $(pct "$dsize" "$size") | $cs | $(awk -v k="$cm" 'BEGIN{printf "%.0f", k/1024}') | $as | $(awk -v k="$am" 'BEGIN{printf "%.0f", k/1024}') | $ok |"
        rm -f "$o"
    done
done
