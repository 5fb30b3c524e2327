#!/usr/bin/env bash
# Per-commit cost against directory size: 50 new files, each written and fsync'd on its
# own (so each is one commit), in a directory that already holds N entries, for N =
# 1,000, 10,000 and 100,000; on the mount and on the plain disk beside it, in one run.
# Prints ms per file and, per system, the ratio of the largest directory to the smallest
# (flat cost means a ratio near 1).
#
#   bench/commit.sh [N…]      (default: 1000 10000 100000)
#
# Uses a release build, or the binary PEERFS_BIN names.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000 10000 100000)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/peerfs-ci/target}"
if [ -z "${PEERFS_BIN:-}" ]; then
  cargo build --release --quiet --manifest-path "$here/Cargo.toml"
fi
peerfs="${PEERFS_BIN:-$CARGO_TARGET_DIR/release/peerfs}"

work="$(mktemp -d /var/tmp/peerfs-bench.XXXXXX)"
repo="$work/repo" mnt="$work/mnt" raw="$work/raw"
mkdir -p "$mnt" "$raw"
cleanup() {
  "$peerfs" --repo "$repo" unmount "$mnt" >/dev/null 2>&1 || fusermount3 -u -z "$mnt" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
"$peerfs" --repo "$repo" init >/dev/null
"$peerfs" --repo "$repo" mount "$mnt" --listen /ip4/127.0.0.1/tcp/0 --no-mdns >/dev/null

# Fills DIR with N entries (committed), then times 50 fsync'd creations in it.
python3 - "$mnt/drive" "$raw" "${sizes[@]}" <<'PY'
import os, sys, time
mount, raw, sizes = sys.argv[1], sys.argv[2], [int(n) for n in sys.argv[3:]]

def fill(d, n):
    os.makedirs(d, exist_ok=True)
    for i in range(n):
        with open(os.path.join(d, "e%06d" % i), "wb") as f:
            f.write(b"x")
    fd = os.open(d, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)

def per_file_ms(d):
    start = time.perf_counter()
    for i in range(50):
        with open(os.path.join(d, "new%02d" % i), "wb") as f:
            f.write(b"new file\n")
            f.flush()
            os.fsync(f.fileno())
    return (time.perf_counter() - start) / 50 * 1000

results = {}
for n in sizes:
    for name, top in (("peerfs", mount), ("disk", raw)):
        d = os.path.join(top, "dir%d" % n)
        fill(d, n)
        results[(name, n)] = per_file_ms(d)
print("%-8s %10s %10s" % ("entries", "peerfs ms", "disk ms"))
for n in sizes:
    print("%-8d %10.2f %10.2f" % (n, results[("peerfs", n)], results[("disk", n)]))
lo, hi = sizes[0], sizes[-1]
for name in ("peerfs", "disk"):
    print("%s: %d entries / %d entries = %.2fx" % (name, hi, lo, results[(name, hi)] / results[(name, lo)]))
PY
