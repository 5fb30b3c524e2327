#!/usr/bin/env bash
# A peer's directory, cold, against sshfs to 127.0.0.1 holding the same tree, in one
# run: time to first byte of one file of a 10,000-entry directory neither has listed,
# then `ls -l` of that directory (B has none of its blocks but the few that lookup
# brought, the page cache is dropped, sshfs is freshly mounted), time to first byte of
# files nobody has read (the median of 20, each after a cache drop), and of 20 files
# of the big directory, listed and forgotten since. Prints both, and the ratios sshfs
# time / peerfs time (above 1: peerfs is faster).
#
#   bench/peer-ls.sh [ENTRIES]      (default 10000)
#
# Needs root (drop_caches, sshd). Uses a release build, or the binary PEERFS_BIN names.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
entries="${1:-10000}"
. "$here/bench/lib/sshfs.sh"
sshfs_need
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/peerfs-ci/target}"
if [ -z "${PEERFS_BIN:-}" ]; then
  cargo build --release --locked --quiet --manifest-path "$here/Cargo.toml"
fi
peerfs="${PEERFS_BIN:-$CARGO_TARGET_DIR/release/peerfs}"

work="$(mktemp -d /var/tmp/peerfs-ls.XXXXXX)"
mkdir -p "$work"/{ma,mb,sshmnt,src}
cleanup() {
  for r in a b; do
    [ -d "$work/$r" ] || continue
    "$peerfs" --repo "$work/$r" unmount "$work/m$r" >/dev/null 2>&1 ||
      fusermount3 -u -z "$work/m$r" 2>/dev/null || true
  done
  sshfs_cleanup
  rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s.%N; }
secs() { echo "$(now) - $1" | bc -l; }
cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }
net=(--listen /ip4/127.0.0.1/tcp/0 --no-mdns)

for r in a b; do
  "$peerfs" --repo "$work/$r" init >/dev/null
  "$peerfs" --repo "$work/$r" mount "$work/m$r" "${net[@]}" >/dev/null
done

# The same tree on A's drive and on the disk sshfs serves: `big` with ENTRIES small
# files, `ttfb` with 20 files of 64 KiB.
make_tree() {
  python3 - "$1" "$entries" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
os.makedirs(os.path.join(root, "big"))
for i in range(n):
    with open(os.path.join(root, "big", f"file-{i:05}.txt"), "w") as f:
        f.write(f"entry {i}\n")
os.makedirs(os.path.join(root, "ttfb"))
for i in range(20):
    with open(os.path.join(root, "ttfb", f"f{i:02}.bin"), "wb") as f:
        f.write(os.urandom(64 << 10))
PY
}
t0="$(now)"
make_tree "$work/src"
# A's drive gets the bytes of the local copy, so both trees match.
cp -r "$work/src/big" "$work/src/ttfb" "$work/ma/drive/"
echo done > "$work/ma/drive/done"
sync "$work/ma/drive"
t_create="$(secs "$t0")"
a_addr="$("$peerfs" --repo "$work/a" id | sed -n 2p)"
b_addr="$("$peerfs" --repo "$work/b" id | sed -n 2p)"
"$peerfs" --repo "$work/b" peer add "$a_addr" --name alice >/dev/null
"$peerfs" --repo "$work/a" peer add "$b_addr" --name bob >/dev/null
for _ in $(seq 600); do [ -e "$work/mb/peers/alice/done" ] && break; sleep 0.1; done
[ -e "$work/mb/peers/alice/done" ] || { echo "B never saw A's tree" >&2; exit 1; }
sshfs_mount "$work/src" "$work/sshmnt"

# First byte of one file in the big directory, which neither has listed yet (one
# sample each: the first lookup there is the cold one).
first_byte() { cold; local t0; t0="$(now)"; head -c 1 "$1" > /dev/null; secs "$t0"; }
big_one="$(printf 'big/file-%05d.txt' $((entries * 3 / 7)))"
first_big_peerfs="$(first_byte "$work/mb/peers/alice/$big_one")"
first_big_sshfs="$(first_byte "$work/sshmnt/$big_one")"

# Cold `ls -l` of the big directory.
cold; t0="$(now)"; n_peerfs="$(ls -l "$work/mb/peers/alice/big" | wc -l)"; ls_peerfs="$(secs "$t0")"
cold; t0="$(now)"; n_sshfs="$(ls -l "$work/sshmnt/big" | wc -l)"; ls_sshfs="$(secs "$t0")"
[ "$n_peerfs" = "$n_sshfs" ] || { echo "ls -l: $n_peerfs lines on peerfs, $n_sshfs on sshfs" >&2; exit 1; }

# Time to first byte, each file once, cold: the median of 20.
ttfb() {
  local dir="$1" f times=()
  shift
  for f in "$@"; do times+=("$(first_byte "$dir/$f")"); done
  printf '%s\n' "${times[@]}" | sort -n | sed -n 10p
}
small=($(seq -f 'ttfb/f%02g.bin' 0 19))
ttfb_peerfs="$(ttfb "$work/mb/peers/alice" "${small[@]}")"
ttfb_sshfs="$(ttfb "$work/sshmnt" "${small[@]}")"
# ...and of 20 files of the big directory, listed above and forgotten since (the
# cache drop makes the kernel forget it; B keeps its blocks).
big=($(for i in $(seq 20); do printf 'big/file-%05d.txt\n' $(((i * 487) % entries)); done))
ttfb_big_peerfs="$(ttfb "$work/mb/peers/alice" "${big[@]}")"
ttfb_big_sshfs="$(ttfb "$work/sshmnt" "${big[@]}")"
cmp "$work/mb/peers/alice/ttfb/f07.bin" "$work/src/ttfb/f07.bin"

printf 'tree of %s entries made in %.1f s (binary: %s)\n' "$entries" "$t_create" "$peerfs"
printf '%-38s %10s %10s %8s\n' "" "peerfs" "sshfs" "ratio"
printf '%-38s %10.3f %10.3f %7.2fx\n' "cold ls -l, $entries entries, s" "$ls_peerfs" "$ls_sshfs" \
  "$(echo "$ls_sshfs / $ls_peerfs" | bc -l)"
line() {
  printf '%-38s %10.4f %10.4f %7.2fx\n' "$1" "$2" "$3" "$(echo "$3 / $2" | bc -l)"
}
line "time to first byte, median of 20, s" "$ttfb_peerfs" "$ttfb_sshfs"
line "first byte in big, never listed, s" "$first_big_peerfs" "$first_big_sshfs"
line "first byte in big, forgotten, med., s" "$ttfb_big_peerfs" "$ttfb_big_sshfs"
echo "ratio: sshfs time / peerfs time (above 1: peerfs is faster)"
