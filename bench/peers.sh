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
. "$here/bench/lib/cpu.sh"
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

# The same bytes on A's drive and on the local disk sshfs serves: two files, so that
# each side reads one first and one last.
for f in seq1 seq2; do
  head -c "$((size_mib << 20))" /dev/urandom > "$work/src/$f.bin"
  cp "$work/src/$f.bin" "$work/ma/drive/$f.bin"
done
echo first > "$work/ma/drive/first.txt"
echo first > "$work/src/first.txt"
for _ in $(seq 200); do [ -e "$work/mb/peers/alice/seq2.bin" ] && break; sleep 0.1; done
daemons=("$(pgrep -f -- "--repo $work/a mount")" "$(pgrep -f -- "--repo $work/b mount")")

# sshd on loopback only, with throwaway keys.
sshfs_mount "$work/src" "$work/sshmnt"

# Cold sequential reads, peerfs, sshfs, sshfs, peerfs (a drift in the machine's load
# then falls on both), after A has settled (stored, compacted). CPU time is counted
# for both daemons, and for sshd, sftp-server and sshfs.
settle "${daemons[@]}"
ssh_side() { pgrep -x sshd; pgrep -x sshfs; pgrep -f sftp-server; }
declare -A took=([peerfs]=0 [sshfs]=0) cpu=([peerfs]=0 [sshfs]=0)
read_cold() { # SIDE FILE
  local pids c0 t0 dir="$work/sshmnt"
  if [ "$1" = peerfs ]; then pids=("${daemons[@]}") dir="$work/mb/peers/alice"; else mapfile -t pids < <(ssh_side); fi
  cold; c0="$(cpu_secs "${pids[@]}")"; t0="$(now)"
  cat "$dir/$2" > /dev/null
  took[$1]="$(echo "${took[$1]} + $(secs "$t0")" | bc -l)"
  cpu[$1]="$(echo "${cpu[$1]} + $(cpu_secs "${pids[@]}") - $c0" | bc -l)"
}
read_cold peerfs seq1.bin; read_cold sshfs seq1.bin; read_cold sshfs seq2.bin; read_cold peerfs seq2.bin
for f in seq1 seq2; do cmp "$work/mb/peers/alice/$f.bin" "$work/src/$f.bin"; done
size_mib=$((2 * size_mib)) t_peerfs="${took[peerfs]}" t_sshfs="${took[sshfs]}"

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
printf '%-34s %10.2f %10.2f\n' "CPU seconds per GiB read" "$(echo "${cpu[peerfs]} * 1024 / $size_mib" | bc -l)" "$(echo "${cpu[sshfs]} * 1024 / $size_mib" | bc -l)"
printf 'cold read, peerfs/sshfs:           %.2fx\n' "$(echo "$t_sshfs / $t_peerfs" | bc -l)"
printf 'iperf3 loopback MiB/s:             %.0f (peerfs reaches %.1f%%)\n' \
  "$(echo "$iperf_bps / 8 / 1048576" | bc -l)" "$(echo "100 * $(mib_s "$t_peerfs") * 8 * 1048576 / $iperf_bps" | bc -l)"
printf 'head propagation p50 / p95, s:     %.3f / %.3f\n' "$p50" "$p95"
