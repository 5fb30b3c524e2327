#!/usr/bin/env bash
# Benchmark of the storage core (issue: content-addressed core). One run, ratios only:
# this machine is shared, absolute times mean little.
#
#   peerfs add FILE        vs  sha256sum FILE (the hashing limit)  and  cp FILE to the same disk
#   peerfs get CID OUT     vs  cat FILE > OUT                       (caches dropped before each)
#   peerfs cat CID         vs  cat FILE        (to /dev/null)       (caches dropped before each)
#
# Every timed write ends with `sync`, so page cache does not flatter anyone. Needs root
# (drop_caches). Usage: bench/add-get.sh [SIZE_MIB] (default 1024). Work dir: $BENCH_DIR
# (default /var/tmp, the same disk as a repo in ~/.local/share).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
size_mib="${1:-1024}"
work="$(mktemp -d "${BENCH_DIR:-/var/tmp}/peerfs-bench.XXXXXX")"
trap 'rm -rf "$work"' EXIT

command -v bc >/dev/null || apt-get install -y -qq bc >/dev/null
cargo build --release --quiet --manifest-path "$here/Cargo.toml"
target="${CARGO_TARGET_DIR:-$here/target}"
peerfs="$target/release/peerfs"
repo="$work/repo"

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
# seconds COMMAND…: wall time of the command plus a sync
seconds() { local t0; t0=$(now); "$@"; sync; echo "$(now) - $t0" | bc -l; }

echo "preparing a ${size_mib} MiB file of random bytes in $work" >&2
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/file"
"$peerfs" --repo "$repo" init >/dev/null

drop_caches; t_sha=$(seconds sh -c "sha256sum '$work/file' >/dev/null")
drop_caches; t_cp=$(seconds cp "$work/file" "$work/copy")
rm -f "$work/copy"
drop_caches
t0=$(now)
/usr/bin/time -f "%M" -o "$work/add.rss" "$peerfs" --repo "$repo" add -q "$work/file" > "$work/cid"
sync
t_add=$(echo "$(now) - $t0" | bc -l)
cid=$(cat "$work/cid")

drop_caches; t_cat=$(seconds sh -c "cat '$work/file' > '$work/cat.out'")
rm -f "$work/cat.out"
drop_caches; t_get=$(seconds "$peerfs" --repo "$repo" get "$cid" "$work/get.out")
cmp -s "$work/file" "$work/get.out" || { echo "get returned different bytes" >&2; exit 1; }
rm -f "$work/get.out"
drop_caches; t_cat_null=$(seconds sh -c "cat '$work/file' > /dev/null")
drop_caches; t_pcat_null=$(seconds sh -c "'$peerfs' --repo '$repo' cat '$cid' > /dev/null")

mib_s() { echo "$size_mib / $1" | bc -l; }
ratio() { echo "$1 / $2" | bc -l; }
printf '%-34s %8.0f MiB/s\n' "sha256sum" "$(mib_s "$t_sha")" "cp (same disk, +sync)" "$(mib_s "$t_cp")" \
  "peerfs add (+sync)" "$(mib_s "$t_add")" "cat > file (+sync)" "$(mib_s "$t_cat")" \
  "peerfs get (+sync)" "$(mib_s "$t_get")" "cat > /dev/null" "$(mib_s "$t_cat_null")" \
  "peerfs cat > /dev/null" "$(mib_s "$t_pcat_null")"
echo
printf 'add / cp throughput:          %.2fx  (target >= 0.5x)\n' "$(ratio "$t_cp" "$t_add")"
printf 'add / sha256sum throughput:   %.2fx\n' "$(ratio "$t_sha" "$t_add")"
printf 'get / cat throughput:         %.2fx  (target >= 0.5x)\n' "$(ratio "$t_cat" "$t_get")"
printf 'cat / cat to /dev/null:       %.2fx\n' "$(ratio "$t_cat_null" "$t_pcat_null")"
printf 'peak RSS of peerfs add:       %d MiB\n' "$(( $(cat "$work/add.rss") / 1024 ))"
printf 'repo size on disk:            %s\n' "$(du -sh "$repo" | cut -f1)"
