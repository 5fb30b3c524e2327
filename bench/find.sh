#!/usr/bin/env bash
# `peerfs find` over a followed drive that the follower has never listed, asked of its
# owner (`--remote`) against walking it here, in one run: A's drive holds N files in
# directories of 100 (one in a hundred a .pdf); B1 and B2 follow A, cold.
#
#   bench/find.sh [N]      (default 10000)
#
# Uses a release build, or the binary PEERFS_BIN names.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
n="${1:-10000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/peerfs-ci/target}"
if [ -z "${PEERFS_BIN:-}" ]; then
  cargo build --release --quiet --manifest-path "$here/Cargo.toml"
fi
peerfs="${PEERFS_BIN:-$CARGO_TARGET_DIR/release/peerfs}"

work="$(mktemp -d /var/tmp/peerfs-bench.XXXXXX)"
nodes=(a b1 b2)
cleanup() {
  for r in "${nodes[@]}"; do
    "$peerfs" --repo "$work/$r" unmount "$work/m$r" >/dev/null 2>&1 || fusermount3 -u -z "$work/m$r" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s.%N; }
secs() { echo "$(now) - $1" | bc -l; }
net=(--listen /ip4/127.0.0.1/tcp/0 --no-mdns)

for r in "${nodes[@]}"; do
  mkdir -p "$work/m$r"
  "$peerfs" --repo "$work/$r" init >/dev/null
done
# A's drive is open to everyone, so both followers may walk it.
sed -i 's/^readers = .*/readers = ["*"]/' "$work/a/config.toml"
grep -q '^readers' "$work/a/config.toml" || echo 'readers = ["*"]' >> "$work/a/config.toml"
for r in "${nodes[@]}"; do
  "$peerfs" --repo "$work/$r" mount "$work/m$r" "${net[@]}" >/dev/null
done

src="$work/src"
for ((i = 0; i < n; i++)); do
  d="$src/d$((i / 100))"
  [ $((i % 100)) -eq 0 ] && mkdir -p "$d"
  if [ $((i % 100)) -eq 7 ]; then echo "$i" > "$d/f$i.pdf"; else echo "$i" > "$d/f$i.txt"; fi
done
cp -r "$src" "$work/ma/drive/tree"
sync -f "$work/ma/drive/tree" 2>/dev/null || true
"$peerfs" --repo "$work/a" status >/dev/null
a_addr="$("$peerfs" --repo "$work/a" id | sed -n 2p)"
for b in b1 b2; do
  "$peerfs" --repo "$work/$b" peer add "$a_addr" --name alice >/dev/null
done
# Both have A's newest head (with every file in it) before the clock starts.
want="$(find "$src" -name '*.pdf' | wc -l)"
for b in b1 b2; do
  for _ in $(seq 600); do
    [ -d "$work/m$b/peers/alice/tree/d$(((n - 1) / 100))" ] && break
    sleep 0.1
  done
done

t0="$(now)"; got_remote="$("$peerfs" --repo "$work/b1" find --remote --peer alice '*.pdf' | wc -l)"; t_remote="$(secs "$t0")"
t0="$(now)"; got_walk="$("$peerfs" --repo "$work/b2" find --peer alice '*.pdf' | wc -l)"; t_walk="$(secs "$t0")"
[ "$got_remote" = "$want" ] && [ "$got_walk" = "$want" ] || {
  echo "found $got_remote (remote) and $got_walk (walked), want $want" >&2; exit 1
}
printf 'find over %d cold entries of a followed drive (%d matches)\n' "$n" "$want"
printf '  --remote (the owner searches)  %8.3f s\n' "$t_remote"
printf '  walked here (blocks fetched)   %8.3f s\n' "$t_walk"
printf '  walk / remote                  %8.2fx\n' "$(echo "$t_walk / $t_remote" | bc -l)"
