#!/usr/bin/env bash
# Reading a peer's file through the mount, against sshfs to 127.0.0.1 reading the same
# bytes, and iperf3 on loopback, in one run. Also: time to first byte of a remote file,
# and head propagation (write on A, readable on B) p50/p95 over 50 writes.
#
#   bench/peers.sh [MiB]      (default 1024)
#
# Needs root (drop_caches, sshd). Installs openssh-server, sshfs and iperf3 if missing;
# runs sshd on 127.0.0.1 only, with throwaway keys, and stops it. Uses a release build,
# or the binary PEERFS_BIN names.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
size_mib="${1:-1024}"
. "$here/bench/lib/sshfs.sh"
sshfs_need
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/peerfs-ci/target}"
if [ -z "${PEERFS_BIN:-}" ]; then
  cargo build --release --quiet --manifest-path "$here/Cargo.toml"
fi
peerfs="${PEERFS_BIN:-$CARGO_TARGET_DIR/release/peerfs}"

work="$(mktemp -d /var/tmp/peerfs-bench.XXXXXX)"
mkdir -p "$work"/{ma,mb,sshmnt,src}
iperf_pid=""
cleanup() {
  for r in a b; do
    "$peerfs" --repo "$work/$r" unmount "$work/m$r" >/dev/null 2>&1 || fusermount3 -u -z "$work/m$r" 2>/dev/null || true
  done
  sshfs_cleanup
  [ -n "$iperf_pid" ] && kill "$iperf_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s.%N; }
secs() { echo "$(now) - $1" | bc -l; }
cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }
net=(--listen /ip4/127.0.0.1/tcp/0 --no-mdns)

# Two nodes that follow each other.
for r in a b; do
  "$peerfs" --repo "$work/$r" init >/dev/null
  "$peerfs" --repo "$work/$r" mount "$work/m$r" "${net[@]}" >/dev/null
done
sleep 0.5
a_addr="$("$peerfs" --repo "$work/a" id | sed -n 2p)"
b_addr="$("$peerfs" --repo "$work/b" id | sed -n 2p)"
"$peerfs" --repo "$work/b" peer add "$a_addr" --name alice >/dev/null
# A's drive is read by the peers A follows (readers = "following", the default).
"$peerfs" --repo "$work/a" peer add "$b_addr" --name bob >/dev/null

# The same bytes on A's drive and on the local disk sshfs serves.
head -c "$((size_mib << 20))" /dev/urandom > "$work/src/seq.bin"
cp "$work/src/seq.bin" "$work/ma/drive/seq.bin"
echo first > "$work/ma/drive/first.txt"
echo first > "$work/src/first.txt"
for _ in $(seq 200); do [ -e "$work/mb/peers/alice/seq.bin" ] && break; sleep 0.1; done

# sshd on loopback only, with throwaway keys.
sshfs_mount "$work/src" "$work/sshmnt"

# Cold sequential reads.
cold; t0="$(now)"; cat "$work/mb/peers/alice/seq.bin" > /dev/null; t_peerfs="$(secs "$t0")"
cold; t0="$(now)"; cat "$work/sshmnt/seq.bin" > /dev/null; t_sshfs="$(secs "$t0")"
cmp "$work/mb/peers/alice/seq.bin" "$work/src/seq.bin"

# Time to first byte of a file nobody has read.
cold; t0="$(now)"; head -c 1 "$work/mb/peers/alice/first.txt" > /dev/null; ttfb_peerfs="$(secs "$t0")"
cold; t0="$(now)"; head -c 1 "$work/sshmnt/first.txt" > /dev/null; ttfb_sshfs="$(secs "$t0")"

# Loopback ceiling.
iperf3 -s -B 127.0.0.1 -p 5299 -1 >/dev/null 2>&1 &
iperf_pid=$!
sleep 0.5
iperf_bps="$(iperf3 -c 127.0.0.1 -p 5299 -t 5 -J | python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"])')"

# Head propagation: write and close on A, poll on B until the new content reads back.
waits=()
for i in $(seq 50); do
  t0="$(now)"
  echo "version $i" > "$work/ma/drive/first.txt"
  for _ in $(seq 1000); do
    [ "$(cat "$work/mb/peers/alice/first.txt" 2>/dev/null)" = "version $i" ] && break
    sleep 0.01
  done
  waits+=("$(secs "$t0")")
done
read -r p50 p95 < <(printf '%s\n' "${waits[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int(NR*0.5)], a[int(NR*0.95)]}')

mib_s() { echo "$size_mib / $1" | bc -l; }
printf '%-34s %10s %10s\n' "" "peerfs" "sshfs"
printf '%-34s %10.1f %10.1f\n' "cold read MiB/s (${size_mib} MiB)" "$(mib_s "$t_peerfs")" "$(mib_s "$t_sshfs")"
printf '%-34s %10.4f %10.4f\n' "time to first byte, s" "$ttfb_peerfs" "$ttfb_sshfs"
printf 'cold read, peerfs/sshfs:           %.2fx\n' "$(echo "$t_sshfs / $t_peerfs" | bc -l)"
printf 'iperf3 loopback MiB/s:             %.0f (peerfs reaches %.1f%%)\n' \
  "$(echo "$iperf_bps / 8 / 1048576" | bc -l)" "$(echo "100 * $(mib_s "$t_peerfs") * 8 * 1048576 / $iperf_bps" | bc -l)"
printf 'head propagation p50 / p95, s:     %.3f / %.3f\n' "$p50" "$p95"
