#!/usr/bin/env bash
# bench/swarm.sh [SIZE_MIB] [RATE_MBIT]: swarming, in network namespaces on one bridge
# (run as root). A owns a SIZE_MIB file (default 256); C and D follow A and pinned it;
# B reads it cold (its cached blocks collected, O_DIRECT past the page cache). Each
# holder's uplink is limited with tbf (RATE_MBIT, default 100; B's is not). Four reads:
#   1. from A alone;
#   2. from A and C at the same rate: the ratio to 1 (target >= 1.8x);
#   3. from A, and C at a fifth of A's rate: the ratio to A's rate and a fifth of it
#      (target >= 0.9x the sum);
#   4. from A, C and D at the same rate: the ratio to 1 (target >= 2.5x).
# Uses $PEERFS, else target/release/peerfs. RUST_LOG reaches the daemons; KEEP_LOG=FILE
# keeps B's daemon.log.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-256}
RATE=${2:-100}
PEERFS=${PEERFS:-$PWD/target/release/peerfs}
[ -x "$PEERFS" ] || { echo "no $PEERFS: cargo build --release, or set PEERFS" >&2; exit 1; }
for tool in nsenter tc bc; do
  command -v $tool >/dev/null || { echo "needs $tool (scripts/install-deps)" >&2; exit 1; }
done

P="pfsw$$"
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for m in "$TMP"/*-mnt; do
    [ -d "$m" ] && { "$PEERFS" unmount "$m" >/dev/null 2>&1 || fusermount3 -u -z "$m" 2>/dev/null || true; }
  done
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for n in br a b c d; do ip netns del "$P-$n" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
[ -n "${KEEP_LOG:-}" ] && trap 'cp "$TMP/b/daemon.log" "$KEEP_LOG" 2>/dev/null; cleanup' EXIT

now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc -l | xargs printf '%.2f'; }

wait_for() { # SECONDS COMMAND...
  local limit=$1; shift
  local end=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || { echo "timed out: $*" >&2; return 1; }
    sleep 0.2
  done
}

declare -A IP=([a]=10.210.0.1 [b]=10.210.0.2 [c]=10.210.0.3 [d]=10.210.0.4)
ip netns add "$P-br"
ip -n "$P-br" link add br0 type bridge
ip -n "$P-br" link set br0 up
for n in a b c d; do
  ip netns add "$P-$n"
  ip -n "$P-$n" link set lo up
  ip -n "$P-$n" link add eth0 type veth peer name "v$n" netns "$P-br"
  ip -n "$P-br" link set "v$n" master br0 up
  ip -n "$P-$n" addr add "${IP[$n]}/24" dev eth0
  ip -n "$P-$n" link set eth0 up
done

# limit NODE MBIT: NODE's uplink at MBIT (none: unlimited).
limit() {
  if [ -z "${2:-}" ]; then
    tc -n "$P-$1" qdisc del dev eth0 root 2>/dev/null || true
  else
    tc -n "$P-$1" qdisc replace dev eth0 root tbf rate "${2}mbit" burst 256kb latency 50ms
  fi
}

repo() { echo "$TMP/$1"; }
id_of() { "$PEERFS" --repo "$(repo "$1")" id 2>/dev/null | head -1; }
addr_of() { echo "/ip4/${IP[$1]}/tcp/4011/p2p/$(id_of "$1")"; }

for n in a b c d; do
  r=$(repo $n)
  "$PEERFS" --repo "$r" init >/dev/null
  sed -i -e 's|^mdns = .*|mdns = false|' -e 's|^dht_server = .*|dht_server = false|' "$r/config.toml"
  # A's drive open to everyone, so that C and D pass its blocks on.
  [ $n = b ] || sed -i 's|^readers = .*|readers = ["*"]|' "$r/config.toml"
  mkdir -p "$r-mnt"
  out=$(RUST_LOG=${RUST_LOG:-} nsenter --net="/run/netns/$P-$n" "$PEERFS" --repo "$r" mount "$r-mnt" \
    --listen "/ip4/${IP[$n]}/tcp/4011" --no-mdns)
  PIDS+=("$(echo "$out" | sed -n 's/.*daemon pid \([0-9]*\).*/\1/p')")
done

echo "bench/swarm.sh: ${SIZE} MiB, holders' uplinks at ${RATE} Mbit/s" >&2
head -c "$((SIZE << 20))" /dev/urandom > "$(repo a)-mnt/drive/big.bin"
sync
for n in c d; do
  "$PEERFS" --repo "$(repo $n)" peer add "$(addr_of a)" --name alice >/dev/null
  wait_for 60 test -s "$(repo $n)-mnt/peers/alice/big.bin"
  "$PEERFS" --repo "$(repo $n)" pin "$(repo $n)-mnt/peers/alice" >/dev/null
done
"$PEERFS" --repo "$(repo b)" peer add "$(addr_of a)" --name alice >/dev/null
wait_for 60 test -s "$(repo b)-mnt/peers/alice/big.bin"

# read_cold: B's cold read of the file; prints seconds. B's cached blocks of a drive it
# follows are kept by gc: it unfollows A, collects, and follows A again.
read_cold() {
  "$PEERFS" --repo "$(repo b)" peer rm alice >/dev/null
  "$PEERFS" --repo "$(repo b)" gc >/dev/null
  "$PEERFS" --repo "$(repo b)" peer add "$(addr_of a)" --name alice >/dev/null
  wait_for 60 test -s "$(repo b)-mnt/peers/alice/big.bin"
  local t0 t1
  t0=$(now)
  dd if="$(repo b)-mnt/peers/alice/big.bin" of=/dev/null bs=4M iflag=direct status=none
  t1=$(now)
  secs "$t0" "$t1"
}

connect() { # B connects to NODE
  "$PEERFS" --repo "$(repo b)" peer add "$(addr_of "$1")" --name "$1" >/dev/null
  wait_for 30 bash -c "'$PEERFS' --repo '$(repo b)' peers --json | grep -c '\"connected\": *true' | grep -qx '$2'"
}

limit a "$RATE"; limit c "$RATE"; limit d "$RATE"
alone=$(read_cold)
connect c 2
two=$(read_cold)
limit c "$((RATE / 5))"
fifth=$(read_cold)
limit c "$RATE"
connect d 3
three=$(read_cold)

mbps() { echo "$SIZE * 8 * 1.048576 / $1" | bc -l | xargs printf '%.1f'; }
ratio() { echo "$1 / $2" | bc -l | xargs printf '%.2f'; }
echo "A alone:                 $(mbps "$alone") Mbit/s (${alone} s)"
echo "A and C, same rate:      $(mbps "$two") Mbit/s (${two} s), $(ratio "$alone" "$two")x A alone (target 1.8x)"
echo "A, and C at a fifth:     $(mbps "$fifth") Mbit/s (${fifth} s), $(ratio "$alone" "$(echo "$fifth * 1.2" | bc -l)")x the sum (target 0.9x)"
echo "A, C and D, same rate:   $(mbps "$three") Mbit/s (${three} s), $(ratio "$alone" "$three")x A alone (target 2.5x)"
for n in a c d; do
  echo "served to B by $n (last minute): $("$PEERFS" --repo "$(repo $n)" status --json |
    python3 -c 'import json,sys; s=json.load(sys.stdin); print(sum(p["blocks_served_last_minute"] for p in s["connected_peers"] if p["peer_id"]==sys.argv[1]))' "$(id_of b)")"
done
