#!/usr/bin/env bash
# The reader's memory when listing a big peer drive: A's drive holds N entries (N/1000
# directories of 1,000 small files), B follows A and runs `ls -lR` on peers/alice cold
# (B has none of A's blocks, the page cache is dropped). Reports B's peak RSS (VmHWM of
# B's daemon) and the listing's time, for each size given, and the ratio of the peak
# RSS between the largest and the smallest: a flat reader gives a ratio near 1.
#
#   bench/peer-listing.sh [ENTRIES…]      (default: 20000 200000)
#
# Needs root (drop_caches). Uses a release build, or the binary PEERFS_BIN names.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
sizes=("$@")
[ "${#sizes[@]}" -gt 0 ] || sizes=(20000 200000)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/peerfs-ci/target}"
if [ -z "${PEERFS_BIN:-}" ]; then
  cargo build --release --locked --quiet --manifest-path "$here/Cargo.toml"
fi
peerfs="${PEERFS_BIN:-$CARGO_TARGET_DIR/release/peerfs}"

work="$(mktemp -d /var/tmp/peerfs-listing.XXXXXX)"
cleanup() {
  for r in a b; do
    [ -d "$work/$r" ] || continue
    "$peerfs" --repo "$work/$r" unmount "$work/m$r" >/dev/null 2>&1 ||
      fusermount3 -u -z "$work/m$r" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s.%N; }
secs() { echo "$(now) - $1" | bc -l; }
net=(--listen /ip4/127.0.0.1/tcp/0 --no-mdns)
kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }

# One size: two fresh nodes that follow each other, N entries on A, `ls -lR` on B.
# Prints "entries create_s list_s lines b_rss_before_kib b_peak_kib".
measure() {
  local n="$1" r pid_b t0 t_create t_list lines before peak
  cleanup
  mkdir -p "$work"/{ma,mb}
  for r in a b; do
    "$peerfs" --repo "$work/$r" init >/dev/null
    "$peerfs" --repo "$work/$r" mount "$work/m$r" "${net[@]}" > "$work/$r.mount"
  done
  pid_b="$(sed -n 's/.*daemon pid \([0-9]*\).*/\1/p' "$work/b.mount")"
  t0="$(now)"
  python3 - "$work/ma/drive/tree" "$n" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
per_dir = 1000
dirs = max(1, -(-n // (per_dir + 1)))
made = 0
for d in range(dirs):
    path = os.path.join(root, f"d{d:04}")
    os.makedirs(path)
    made += 1
    for f in range(min(per_dir, n - made)):
        with open(os.path.join(path, f"file-{f:05}.txt"), "w") as out:
            out.write(f"{d} {f}\n")
        made += 1
EOF
  sync "$work/ma/drive"
  t_create="$(secs "$t0")"
  local a_addr b_addr
  a_addr="$("$peerfs" --repo "$work/a" id | sed -n 2p)"
  b_addr="$("$peerfs" --repo "$work/b" id | sed -n 2p)"
  "$peerfs" --repo "$work/b" peer add "$a_addr" --name alice >/dev/null
  "$peerfs" --repo "$work/a" peer add "$b_addr" --name bob >/dev/null
  for _ in $(seq 600); do [ -d "$work/mb/peers/alice/tree" ] && break; sleep 0.1; done
  [ -d "$work/mb/peers/alice/tree" ] || { echo "B never saw A's drive" >&2; exit 1; }
  sync; echo 3 > /proc/sys/vm/drop_caches
  before="$(kib "$pid_b" VmRSS)"
  t0="$(now)"
  lines="$(ls -lR "$work/mb/peers/alice/tree" | wc -l)"
  t_list="$(secs "$t0")"
  peak="$(kib "$pid_b" VmHWM)"
  echo "$n $t_create $t_list $lines $before $peak"
}

results=()
for n in "${sizes[@]}"; do
  results+=("$(measure "$n")") || exit 1
done
printf '%-10s %10s %10s %10s %14s %14s\n' entries create_s ls_lR_s lines "B RSS before" "B peak RSS"
for r in "${results[@]}"; do
  read -r n tc tl lines before peak <<<"$r"
  printf '%-10s %10.1f %10.1f %10s %11s MiB %11s MiB\n' "$n" "$tc" "$tl" "$lines" \
    "$((before / 1024))" "$((peak / 1024))"
done
read -r n0 _ _ _ _ p0 <<<"${results[0]}"
read -r n1 _ _ _ _ p1 <<<"${results[-1]}"
printf 'peak RSS %s / %s entries: %.2fx (entries %.0fx)\n' "$n1" "$n0" \
  "$(echo "$p1 / $p0" | bc -l)" "$(echo "$n1 / $n0" | bc -l)"
