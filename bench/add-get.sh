#!/usr/bin/env bash
# Benchmark of the storage core. Ratios only: this machine is shared, so each
# measurement runs RUNS times (default 3), interleaved with its baseline, and the
# medians are compared.
#
#   peerfs add FILE        vs  cp FILE to the same disk, and sha256sum FILE
#   peerfs get CID OUT     vs  cat FILE > OUT
#   peerfs cat CID         vs  cat FILE            (both to /dev/null)
#
# Caches are dropped before every run and every write ends with `sync`, so the page
# cache flatters no one. Needs root (drop_caches).
# Usage: bench/add-get.sh [SIZE_MIB] (default 1024); work dir $BENCH_DIR (default /var/tmp).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
size_mib="${1:-1024}"
runs="${RUNS:-3}"
work="$(mktemp -d "${BENCH_DIR:-/var/tmp}/peerfs-bench.XXXXXX")"
trap 'rm -rf "$work"' EXIT

command -v bc >/dev/null || apt-get install -y -qq bc >/dev/null
cargo build --release --quiet --manifest-path "$here/Cargo.toml"
peerfs="${CARGO_TARGET_DIR:-$here/target}/release/peerfs"

# seconds COMMAND: wall time from cold caches, including a final sync.
seconds() {
  sync; echo 3 > /proc/sys/vm/drop_caches
  local t0; t0=$(date +%s.%N)
  sh -c "$1"; sync
  echo "$(date +%s.%N) - $t0" | bc -l
}
median() { printf '%s\n' "$@" | sort -g | sed -n "$(( ($# + 1) / 2 ))p"; }

echo "preparing a ${size_mib} MiB file of random bytes in $work" >&2
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/file"

declare -A t
for name in sha cp add cat get catnull pcatnull; do t[$name]=""; done
for run in $(seq "$runs"); do
  echo "run $run of $runs" >&2
  rm -rf "$work/repo" && "$peerfs" --repo "$work/repo" init >/dev/null
  t[sha]+=" $(seconds "sha256sum '$work/file' >/dev/null")"
  t[cp]+=" $(seconds "cp '$work/file' '$work/copy'")"; rm -f "$work/copy"
  t[add]+=" $(seconds "/usr/bin/time -f %M -o '$work/add.rss' '$peerfs' --repo '$work/repo' add -q '$work/file' > '$work/cid'")"
  cid=$(cat "$work/cid")
  t[cat]+=" $(seconds "cat '$work/file' > '$work/cat.out'")"; rm -f "$work/cat.out"
  t[get]+=" $(seconds "'$peerfs' --repo '$work/repo' get '$cid' '$work/get.out'")"
  cmp -s "$work/file" "$work/get.out" || { echo "get returned different bytes" >&2; exit 1; }
  rm -f "$work/get.out"
  t[catnull]+=" $(seconds "cat '$work/file' > /dev/null")"
  t[pcatnull]+=" $(seconds "'$peerfs' --repo '$work/repo' cat '$cid' > /dev/null")"
done

declare -A m
for name in "${!t[@]}"; do m[$name]=$(median ${t[$name]}); done
mib_s() { echo "$size_mib / ${m[$1]}" | bc -l; }
ratio() { echo "${m[$2]} / ${m[$1]}" | bc -l; }
echo "medians of $runs runs, ${size_mib} MiB:"
for pair in "sha256sum:sha" "cp (same disk):cp" "peerfs add:add" "cat > file:cat" "peerfs get:get" \
            "cat > /dev/null:catnull" "peerfs cat > /dev/null:pcatnull"; do
  printf '  %-24s %6.0f MiB/s\n' "${pair%%:*}" "$(mib_s "${pair##*:}")"
done
printf 'add / cp throughput:        %.2fx  (target >= 0.5x)\n' "$(ratio add cp)"
printf 'add / sha256sum throughput: %.2fx\n' "$(ratio add sha)"
printf 'get / cat throughput:       %.2fx  (target >= 0.5x)\n' "$(ratio get cat)"
printf 'cat / cat, to /dev/null:    %.2fx\n' "$(ratio pcatnull catnull)"
printf 'peak RSS of peerfs add:     %d MiB\n' "$(( $(cat "$work/add.rss") / 1024 ))"
