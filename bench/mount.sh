#!/usr/bin/env bash
# The mount against the plain disk and bindfs over the same disk, in one run; prints
# times and ratios (bindfs time / peerfs time: above 1 means peerfs is faster).
#
#   bench/mount.sh [MiB]      (default 1024: the sequential file's size)
#
# Needs root (drop_caches). Installs bindfs if missing. Uses a release build, or the
# binary PEERFS_BIN names.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
size_mib="${1:-1024}"
command -v bindfs >/dev/null || { apt-get update -qq && apt-get install -y -qq bindfs >/dev/null; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/peerfs-ci/target}"
if [ -z "${PEERFS_BIN:-}" ]; then
  cargo build --release --quiet --manifest-path "$here/Cargo.toml"
fi
peerfs="${PEERFS_BIN:-$CARGO_TARGET_DIR/release/peerfs}"

work="$(mktemp -d /var/tmp/peerfs-bench.XXXXXX)"
repo="$work/repo" mnt="$work/mnt" raw="$work/raw" bind="$work/bind" bindsrc="$work/bindsrc"
mkdir -p "$mnt" "$raw" "$bind" "$bindsrc"
cleanup() {
  "$peerfs" --repo "$repo" unmount "$mnt" >/dev/null 2>&1 || fusermount3 -u -z "$mnt" 2>/dev/null || true
  fusermount3 -u -z "$bind" 2>/dev/null || umount -l "$bind" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$peerfs" --repo "$repo" init >/dev/null
"$peerfs" --repo "$repo" mount "$mnt" --listen /ip4/127.0.0.1/tcp/0 --no-mdns >/dev/null
pid="$("$peerfs" --repo "$repo" status | awk '/daemon pid/ {print $3}')"
bindfs -o big_writes,multithreaded "$bindsrc" "$bind" 2>/dev/null || bindfs "$bindsrc" "$bind"

# Inputs on local disk, in the page cache.
head -c "$((size_mib << 20))" /dev/urandom > "$work/seq.bin"
mkdir -p "$work/tree/small" "$work/tree/big"
python3 - "$work/tree" <<'PY'
import os, sys
root = sys.argv[1]
for i in range(10000):
    d = os.path.join(root, "small", "d%02d" % (i % 50))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%05d" % i), "wb") as f:
        f.write(os.urandom(4096))
for i in range(20):
    with open(os.path.join(root, "big", "b%02d" % i), "wb") as f:
        f.write(os.urandom(5 << 20))
PY

now() { date +%s.%N; }
declare -A T
timeit() { # name target command...
  local name="$1" target="$2"; shift 2
  local t0; t0="$(now)"
  "$@" >/dev/null
  T["$name,$target"]="$(echo "$(now) - $t0" | bc -l)"
}
create_small() { python3 - "$1" <<'PY'
import os, sys
d = os.path.join(sys.argv[1], "small")
os.makedirs(d)
buf = b"x" * 4096
for i in range(10000):
    with open(os.path.join(d, "f%05d" % i), "wb") as f:
        f.write(buf)
PY
}

for target in raw bind mnt; do
  case $target in raw) dir="$raw";; bind) dir="$bind";; mnt) dir="$mnt/drive";; esac
  sync; echo 3 > /proc/sys/vm/drop_caches
  cat "$work/seq.bin" > /dev/null
  timeit seq_write $target dd if="$work/seq.bin" of="$dir/seq.bin" bs=1M conv=fsync status=none
  [ $target = mnt ] && rss_write="$(awk '/VmHWM/ {print $2}' /proc/$pid/status)"
  sync; echo 3 > /proc/sys/vm/drop_caches
  timeit seq_read $target cat "$dir/seq.bin"
  timeit create_10k $target create_small "$dir"
  sync; echo 3 > /proc/sys/vm/drop_caches
  timeit find $target find "$dir/small"
  timeit ls_lR $target ls -lR "$dir/small"
  timeit rsync_in $target rsync -a "$work/tree/" "$dir/tree/"
  timeit rsync_noop $target rsync -a "$work/tree/" "$dir/tree/"
done

printf '%-12s %10s %10s %10s %14s %14s\n' test disk_s bindfs_s peerfs_s peerfs/disk peerfs/bindfs
for t in seq_write seq_read create_10k find ls_lR rsync_in rsync_noop; do
  r="${T[$t,raw]}" b="${T[$t,bind]}" p="${T[$t,mnt]}"
  # Speed ratios: how fast peerfs is relative to the baseline (time_base / time_peerfs).
  printf '%-12s %10.3f %10.3f %10.3f %13.2fx %13.2fx\n' "$t" "$r" "$b" "$p" \
    "$(echo "$r / $p" | bc -l)" "$(echo "$b / $p" | bc -l)"
done
echo "seq_write MiB/s: disk $(echo "$size_mib / ${T[seq_write,raw]}" | bc) bindfs $(echo "$size_mib / ${T[seq_write,bind]}" | bc) peerfs $(echo "$size_mib / ${T[seq_write,mnt]}" | bc)"
echo "daemon peak RSS through the ${size_mib} MiB write: $((rss_write / 1024)) MiB; at the end: $(( $(awk '/VmHWM/ {print $2}' /proc/$pid/status) / 1024 )) MiB"
