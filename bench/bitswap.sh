#!/usr/bin/env bash
# Bitswap against our own block protocol, one run: a 256 MiB file added on A is fetched
# (1) by a Helia node over Bitswap (tests/oracle/helia, exported to a file), and (2) by
# B, a peerfs node that follows A, reading it cold through peers/alice (over
# /peerfs/block/2). Prints both times, MiB/s, and the ratio Bitswap/own.
#
#   bench/bitswap.sh [MIB]      (default: 256)
#
# Needs root (FUSE, drop_caches) and scripts/install-deps (Helia). Uses a release
# build, or the binary PEERFS_BIN names.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
mib="${1:-256}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/peerfs-ci/target}"
if [ -z "${PEERFS_BIN:-}" ]; then
  cargo build --release --locked --quiet --manifest-path "$here/Cargo.toml"
fi
peerfs="${PEERFS_BIN:-$CARGO_TARGET_DIR/release/peerfs}"
helia="$here/tests/oracle/helia/helia.mjs"
[ -d "$here/tests/oracle/helia/node_modules/helia" ] || {
  echo "Helia is not installed: run scripts/install-deps" >&2
  exit 1
}

work="$(mktemp -d /var/tmp/peerfs-bitswap.XXXXXX)"
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

mkdir -p "$work"/{ma,mb}
head -c "$((mib << 20))" /dev/urandom > "$work/file.bin"
for r in a b; do "$peerfs" --repo "$work/$r" init >/dev/null; done
# A's drive is open to everyone, so that Helia (a stranger) may read it too.
sed -i 's/^readers = .*/readers = ["*"]/' "$work/a/config.toml"
for r in a b; do "$peerfs" --repo "$work/$r" mount "$work/m$r" "${net[@]}" >/dev/null; done
cp "$work/file.bin" "$work/ma/drive/file.bin"
sync "$work/ma/drive/file.bin"
cid="$(getfattr --only-values -n user.peerfs.cid "$work/ma/drive/file.bin")"
a_addr="$("$peerfs" --repo "$work/a" id | sed -n 2p)"

# (1) Helia over Bitswap.
sync; echo 3 > /proc/sys/vm/drop_caches
t0="$(now)"
node "$helia" fetch "$a_addr" "$cid" "$work/helia.bin" 600000 >/dev/null
t_bitswap="$(secs "$t0")"
cmp "$work/file.bin" "$work/helia.bin"

# (2) B over our own protocol, cold.
"$peerfs" --repo "$work/b" peer add "$a_addr" --name alice >/dev/null
for _ in $(seq 600); do [ -f "$work/mb/peers/alice/file.bin" ] && break; sleep 0.1; done
[ -f "$work/mb/peers/alice/file.bin" ] || { echo "B never saw A's file" >&2; exit 1; }
sync; echo 3 > /proc/sys/vm/drop_caches
t0="$(now)"
cat "$work/mb/peers/alice/file.bin" > "$work/own.bin"
t_own="$(secs "$t0")"
cmp "$work/file.bin" "$work/own.bin"

rate() { echo "$mib / $1" | bc -l; }
printf 'file: %d MiB\n' "$mib"
printf 'helia over bitswap:       %6.2f s  %7.1f MiB/s\n' "$t_bitswap" "$(rate "$t_bitswap")"
printf 'peerfs over /peerfs/block: %6.2f s  %7.1f MiB/s\n' "$t_own" "$(rate "$t_own")"
printf 'ratio (bitswap time / own time): %.2f\n' "$(echo "$t_bitswap / $t_own" | bc -l)"
