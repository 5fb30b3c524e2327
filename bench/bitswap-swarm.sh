#!/usr/bin/env bash
# Bitswap peers as sources of the swarm, one run: a 256 MiB file added on A (a peerfs
# daemon) and copied by a Helia node over Bitswap is pinned by CID by B1, connected to
# A alone, and by B2, connected to A and the Helia node (B2 asks A over our protocol,
# Helia over Bitswap, in one scheduler). Prints both times, MiB/s, what each source
# sent B2, and the ratio of the rates (A and Helia / A alone).
#
#   bench/bitswap-swarm.sh [MIB]      (default: 256)
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

work="$(mktemp -d /var/tmp/peerfs-bitswap-swarm.XXXXXX)"
helia_pid=""
cleanup() {
  [ -n "$helia_pid" ] && kill "$helia_pid" 2>/dev/null || true
  for r in a b1 b2; do
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

mkdir -p "$work"/{ma,mb1,mb2}
head -c "$((mib << 20))" /dev/urandom > "$work/file.bin"
for r in a b1 b2; do "$peerfs" --repo "$work/$r" init >/dev/null; done
# A's adds are served to strangers (Helia, B1, B2) under `readers = ["*"]`.
sed -i 's/^readers = .*/readers = ["*"]/' "$work/a/config.toml"
cid="$("$peerfs" --repo "$work/a" add -q "$work/file.bin")"
"$peerfs" --repo "$work/a" mount "$work/ma" "${net[@]}" >/dev/null
a_addr="$("$peerfs" --repo "$work/a" id | sed -n 2p)"

# Helia copies the file from A over Bitswap, then serves it.
node "$helia" mirror "$a_addr" "$cid" > "$work/helia.out" 2>/dev/null &
helia_pid=$!
for _ in $(seq 1200); do [ -s "$work/helia.out" ] && break; sleep 0.1; done
helia_addr="$(awk '{print $2}' "$work/helia.out")"
[ -n "$helia_addr" ] || { echo "Helia did not copy the file" >&2; exit 1; }

pin() { # REPO BOOTSTRAP...: seconds to pin $cid, cold
  local r="$1"; shift
  local list; list="$(printf '"%s",' "$@")"
  sed -i "s|^bootstrap = .*|bootstrap = [${list%,}]|" "$work/$r/config.toml"
  "$peerfs" --repo "$work/$r" mount "$work/m$r" "${net[@]}" >/dev/null
  for _ in $(seq 200); do
    local n=0
    for p in "$@"; do
      "$peerfs" --repo "$work/$r" status --json | grep -q "${p##*/}" && n=$((n + 1))
    done
    [ "$n" -eq "$#" ] && break
    sleep 0.1
  done
  sleep 1
  sync; echo 3 > /proc/sys/vm/drop_caches
  local t0; t0="$(now)"
  "$peerfs" --repo "$work/$r" pin "$cid" >/dev/null
  secs "$t0"
}

t_alone="$(pin b1 "$a_addr")"
t_both="$(pin b2 "$a_addr" "$helia_addr")"
"$peerfs" --repo "$work/b2" cat "$cid" | cmp - "$work/file.bin"

rate() { echo "$mib / $1" | bc -l; }
printf 'file: %d MiB\n' "$mib"
printf 'B1 from A alone:        %6.2f s  %7.1f MiB/s\n' "$t_alone" "$(rate "$t_alone")"
printf 'B2 from A and Helia:    %6.2f s  %7.1f MiB/s\n' "$t_both" "$(rate "$t_both")"
echo "B2's sources:"
"$peerfs" --repo "$work/b2" transfers | sed -n '2,$p'
printf 'ratio (A and Helia / A alone): %.2f\n' "$(echo "$t_alone / $t_both" | bc -l)"
