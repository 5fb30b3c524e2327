#!/usr/bin/env bash
# bench/nat.sh [SIZE_MIB] [RATE]: reading a peer's file across NAT, in the NAT lab of
# tests/nat.rs (network namespaces; run as root). Each router's uplink is limited to
# RATE (tbf, default 100mbit). Two labs, one after the other:
#   - symmetric NATs: hole punching fails, B reads A's SIZE_MIB file (default 256)
#     through the relay R;
#   - home routers: B's connection to A turns direct by hole punching, then B reads it.
# Both cold (B never had the blocks), against iperf3 from A to R in the same namespaces
# (A's uplink is the bottleneck either way), and the time from `peer add PEERID` to the
# first byte of a small file of A's. Uses $PEERFS, else target/release/peerfs.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-256}
RATE=${2:-100mbit}
PEERFS=${PEERFS:-$PWD/target/release/peerfs}
[ -x "$PEERFS" ] || { echo "no $PEERFS: cargo build --release, or set PEERFS" >&2; exit 1; }
for tool in nft iperf3 nsenter tc; do
  command -v $tool >/dev/null || { echo "needs $tool (scripts/install-deps)" >&2; exit 1; }
done

TMP=$(mktemp -d)
PREFIXES=()
PIDS=()
cleanup() {
  for m in "$TMP"/*-mnt; do
    [ -d "$m" ] && { "$PEERFS" unmount "$m" >/dev/null 2>&1 || fusermount3 -u -z "$m" 2>/dev/null || true; }
  done
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for p in "${PREFIXES[@]}"; do
    for n in a b r1 r2 r inet; do ip netns del "$p-$n" 2>/dev/null || true; done
  done
  rm -rf "$TMP"
}
trap cleanup EXIT

now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc -l | xargs printf '%.2f'; }

# lab PREFIX MODE: the namespaces, as in tests/nat.rs, with tbf on both uplinks.
lab() {
  local P=$1 mode=$2
  PREFIXES+=("$P")
  for n in inet r r1 r2 a b; do ip netns add "$P-$n"; ip -n "$P-$n" link set lo up; done
  ip -n "$P-inet" link add br0 type bridge; ip -n "$P-inet" link set br0 up
  for spec in "r eth0 pr 10.200.0.10" "r1 wan p1 10.200.0.1" "r2 wan p2 10.200.0.2"; do
    set -- $spec
    ip -n "$P-$1" link add "$2" type veth peer name "$3" netns "$P-inet"
    ip -n "$P-inet" link set "$3" master br0 up
    ip -n "$P-$1" addr add "$4/24" dev "$2"; ip -n "$P-$1" link set "$2" up
  done
  local masq=masquerade
  [ "$mode" = symmetric ] && masq="masquerade random,fully-random"
  for spec in "r1 a 1" "r2 b 2"; do
    set -- $spec
    ip -n "$P-$1" link add lan type veth peer name eth0 netns "$P-$2"
    ip -n "$P-$1" addr add "10.20$3.$3.1/24" dev lan; ip -n "$P-$1" link set lan up
    ip -n "$P-$2" addr add "10.20$3.$3.2/24" dev eth0; ip -n "$P-$2" link set eth0 up
    ip -n "$P-$2" route add default via "10.20$3.$3.1"
    ip netns exec "$P-$1" sysctl -qw net.ipv4.ip_forward=1
    ip netns exec "$P-$1" nft -f - <<NFT
table ip nat {
  chain postrouting { type nat hook postrouting priority srcnat; oifname "wan" $masq; }
}
table ip filter {
  chain input { type filter hook input priority filter; policy accept;
    iifname "wan" ct state established,related accept; iifname "wan" drop; }
  chain forward { type filter hook forward priority filter; policy drop;
    iifname "lan" accept; ct state established,related accept; }
}
NFT
    ip netns exec "$P-$1" tc qdisc add dev wan root tbf rate "$RATE" burst 256kb latency 50ms
  done
}

# node PREFIX NAME IP: a repo, mounted inside namespace NAME.
node() {
  local P=$1 n=$2 ip=$3 repo="$TMP/$1-$2"
  "$PEERFS" --repo "$repo" init >/dev/null
  sed -i -e 's|^mdns = .*|mdns = false|' "$repo/config.toml"
  echo "$repo"
}

mount_in() {
  local P=$1 n=$2 ip=$3 repo="$TMP/$1-$2"
  mkdir -p "$repo-mnt"
  local out
  out=$(nsenter --net="/run/netns/$P-$n" "$PEERFS" --repo "$repo" mount "$repo-mnt" \
    --listen "/ip4/$ip/tcp/4011" --listen "/ip4/$ip/udp/4011/quic-v1" --no-mdns)
  PIDS+=("$(echo "$out" | sed -n 's/.*daemon pid \([0-9]*\).*/\1/p')")
}

set_key() { sed -i "s|^$2 = .*|$2 = $3|" "$1/config.toml"; }

wait_for() { # SECONDS COMMAND...
  local limit=$1; shift
  local end=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || { echo "timed out: $*" >&2; return 1; }
    sleep 0.1
  done
}

connection() { # REPO: B's connection to alice
  "$PEERFS" --repo "$1" peers --json | python3 -c \
    'import json,sys; print([p["connection"] for p in json.load(sys.stdin) if p["name"]=="alice"][0])'
}

# run PREFIX MODE: one lab; prints "ttfb read_s" on stdout.
run() {
  local P=$1 mode=$2
  lab "$P" "$mode"
  local r a b
  r=$(node "$P" r 10.200.0.10); a=$(node "$P" a 10.201.1.2); b=$(node "$P" b 10.202.2.2)
  local rid aid bid
  rid=$("$PEERFS" --repo "$r" id 2>/dev/null | head -1)
  aid=$("$PEERFS" --repo "$a" id 2>/dev/null | head -1)
  bid=$("$PEERFS" --repo "$b" id 2>/dev/null | head -1)
  local relay="\"/ip4/10.200.0.10/tcp/4011/p2p/$rid\""
  set_key "$r" relay_server '"on"'
  "$PEERFS" --repo "$r" peer add "$aid" --name a >/dev/null
  "$PEERFS" --repo "$r" peer add "$bid" --name b >/dev/null
  set_key "$a" bootstrap "[$relay]"; set_key "$a" relays "[$relay]"
  set_key "$b" bootstrap "[$relay]"
  set_key "$a" readers "[\"following\", \"$bid\"]"   # B follows A; A lets B read
  mount_in "$P" r 10.200.0.10
  mount_in "$P" a 10.201.1.2
  echo hello > "$a-mnt/drive/small.txt"
  head -c "$((SIZE << 20))" /dev/urandom > "$a-mnt/drive/big.bin"
  sync
  wait_for 30 bash -c "'$PEERFS' --repo '$a' id | grep -q p2p-circuit"
  mount_in "$P" b 10.202.2.2
  local t0 t1
  t0=$(now)
  "$PEERFS" --repo "$b" peer add "$aid" --name alice >/dev/null
  wait_for 60 head -c1 "$b-mnt/peers/alice/small.txt"
  t1=$(now)
  if [ "$mode" = home ]; then
    local end=$(( $(date +%s) + 30 ))
    until [ "$(connection "$b")" = direct ]; do
      [ "$(date +%s)" -lt "$end" ] || { echo "not direct within 30 s" >&2; return 1; }
      sleep 0.2
    done
  fi
  local c; c=$(connection "$b")
  local r0 r1
  r0=$(now)
  cat "$b-mnt/peers/alice/big.bin" > /dev/null
  r1=$(now)
  echo "$(secs "$t0" "$t1") $(secs "$r0" "$r1") $c"
}

echo "bench/nat.sh: ${SIZE} MiB, uplinks limited to $RATE" >&2
# Not in a subshell: cleanup must see the namespaces and daemons each run adds.
run "pfsb$$s" symmetric > "$TMP/symmetric"
run "pfsb$$h" home > "$TMP/home"
read -r ttfb_s relay_s relay_c < "$TMP/symmetric"
read -r ttfb_h direct_s direct_c < "$TMP/home"

# iperf3 from A to R, through A's router and its limited uplink.
P="pfsb$$h"
ip netns exec "$P-r" iperf3 -s -1 -D -B 10.200.0.10 >/dev/null
sleep 0.5
iperf_mbps=$(ip netns exec "$P-a" iperf3 -c 10.200.0.10 -t 10 -J |
  python3 -c 'import json,sys; print("%.1f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6))')

mbps() { echo "$SIZE * 8 * 1.048576 / $1" | bc -l | xargs printf '%.1f'; }
echo "iperf3 A -> R:                      ${iperf_mbps} Mbit/s"
echo "cold read A -> B relayed ($relay_c):  $(mbps "$relay_s") Mbit/s (${relay_s} s), $(echo "$(mbps "$relay_s") / $iperf_mbps" | bc -l | xargs printf '%.2f')x iperf3"
echo "cold read A -> B punched ($direct_c):  $(mbps "$direct_s") Mbit/s (${direct_s} s), $(echo "$(mbps "$direct_s") / $iperf_mbps" | bc -l | xargs printf '%.2f')x iperf3"
echo "peer add PEERID -> first byte:      ${ttfb_s} s (symmetric), ${ttfb_h} s (home routers)"
