#!/usr/bin/env bash
# Sending a file to a peer's inbox, against scp of the same file over a loopback sshd,
# in one run: the time from `cp` into MOUNTPOINT/outbox/bob/ (and from `peerfs send`)
# until the file is complete in bob's MOUNTPOINT/inbox/alice/.
#
#   bench/send.sh [MiB]      (default 256)
#
# Needs root (sshd). Installs openssh-server if missing; runs sshd on 127.0.0.1 only,
# with throwaway keys, and stops it. Uses a release build, or the binary PEERFS_BIN
# names. The outbox's time includes its quiet period (2 s after the last write, see
# README), which is printed apart.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
size_mib="${1:-256}"
[ -x /usr/sbin/sshd ] || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null
}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/peerfs-ci/target}"
if [ -z "${PEERFS_BIN:-}" ]; then
  cargo build --release --quiet --manifest-path "$here/Cargo.toml"
fi
peerfs="${PEERFS_BIN:-$CARGO_TARGET_DIR/release/peerfs}"

work="$(mktemp -d /var/tmp/peerfs-bench.XXXXXX)"
mkdir -p "$work"/{ma,mb,ssh,src,dst}
sshd_pid=""
cleanup() {
  for r in a b; do
    "$peerfs" --repo "$work/$r" unmount "$work/m$r" >/dev/null 2>&1 || fusermount3 -u -z "$work/m$r" 2>/dev/null || true
  done
  [ -n "$sshd_pid" ] && kill "$sshd_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s.%N; }
secs() { echo "$(now) - $1" | bc -l; }
net=(--listen /ip4/127.0.0.1/tcp/0 --no-mdns)

# Two nodes that follow each other (bob takes items from the peers he follows).
for r in a b; do
  "$peerfs" --repo "$work/$r" init >/dev/null
  "$peerfs" --repo "$work/$r" mount "$work/m$r" "${net[@]}" >/dev/null
done
sleep 0.5
a_addr="$("$peerfs" --repo "$work/a" id | sed -n 2p)"
b_addr="$("$peerfs" --repo "$work/b" id | sed -n 2p)"
"$peerfs" --repo "$work/b" peer add "$a_addr" --name alice >/dev/null
"$peerfs" --repo "$work/a" peer add "$b_addr" --name bob >/dev/null

head -c "$((size_mib << 20))" /dev/urandom > "$work/src/one.bin"
cp "$work/src/one.bin" "$work/src/two.bin"
sync

# Complete in bob's inbox: the name shows only once every block is there.
arrived() {
  for _ in $(seq 6000); do [ -e "$work/mb/inbox/alice/$1" ] && return 0; sleep 0.01; done
  echo "$1 did not arrive" >&2; exit 1
}

t0="$(now)"; cp "$work/src/one.bin" "$work/ma/outbox/bob/"; t_cp_done="$(secs "$t0")"
arrived one.bin; t_outbox="$(secs "$t0")"
t0="$(now)"; "$peerfs" --repo "$work/a" send "$work/src/two.bin" --to bob --no-wait >/dev/null
arrived two.bin; t_send="$(secs "$t0")"
cmp "$work/mb/inbox/alice/one.bin" "$work/src/one.bin"
cmp "$work/mb/inbox/alice/two.bin" "$work/src/two.bin"

# sshd on loopback only, with throwaway keys.
ssh-keygen -q -t ed25519 -N '' -f "$work/ssh/host"
ssh-keygen -q -t ed25519 -N '' -f "$work/ssh/user"
cat "$work/ssh/user.pub" > "$work/ssh/authorized"
mkdir -p /run/sshd
/usr/sbin/sshd -D -p 2223 -o ListenAddress=127.0.0.1 -h "$work/ssh/host" \
  -o AuthorizedKeysFile="$work/ssh/authorized" -o PermitRootLogin=prohibit-password \
  -o StrictModes=no -o PidFile=none &
sshd_pid=$!
sleep 1
t0="$(now)"
scp -q -P 2223 -i "$work/ssh/user" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
  "$work/src/one.bin" root@127.0.0.1:"$work/dst/one.bin"
t_scp="$(secs "$t0")"
cmp "$work/dst/one.bin" "$work/src/one.bin"

printf '%-44s %8s\n' "${size_mib} MiB, seconds" ""
printf '%-44s %8.2f\n' "cp into outbox/bob/ (the cp itself)" "$t_cp_done"
printf '%-44s %8.2f\n' "cp into outbox/bob/ to complete in bob's inbox" "$t_outbox"
printf '%-44s %8.2f\n' "peerfs send --no-wait to complete in inbox" "$t_send"
printf '%-44s %8.2f\n' "scp over loopback sshd" "$t_scp"
printf 'outbox / scp: %.2fx   send / scp: %.2fx   (outbox includes the 2 s quiet period)\n' \
  "$(echo "$t_outbox / $t_scp" | bc -l)" "$(echo "$t_send / $t_scp" | bc -l)"
