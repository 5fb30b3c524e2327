# sshfs on loopback, for the benchmarks that compare against it: sourced, not run.
#
#   sshfs_need              installs openssh-server, sshfs (and iperf3) if missing
#   sshfs_mount DIR MNT     sshd on 127.0.0.1:2222 only, with throwaway keys kept in
#                           $work/ssh, and DIR mounted at MNT
#   sshfs_cleanup           unmounts and stops sshd (call it from the script's trap)

sshfs_pid="" sshfs_mnt=""

sshfs_need() {
  local need=()
  command -v sshfs >/dev/null || need+=(sshfs)
  [ -x /usr/sbin/sshd ] || need+=(openssh-server)
  command -v iperf3 >/dev/null || need+=(iperf3)
  if [ "${#need[@]}" -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

sshfs_mount() {
  local dir="$1" mnt="$2" ssh="$work/ssh"
  mkdir -p "$ssh" "$mnt"
  ssh-keygen -q -t ed25519 -N '' -f "$ssh/host"
  ssh-keygen -q -t ed25519 -N '' -f "$ssh/user"
  cat "$ssh/user.pub" > "$ssh/authorized"
  mkdir -p /run/sshd
  /usr/sbin/sshd -D -p 2222 -o ListenAddress=127.0.0.1 -h "$ssh/host" \
    -o AuthorizedKeysFile="$ssh/authorized" -o PermitRootLogin=prohibit-password \
    -o StrictModes=no -o PidFile=none &
  sshfs_pid=$!
  sleep 1
  sshfs -p 2222 -o IdentityFile="$ssh/user",StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null \
    root@127.0.0.1:"$dir" "$mnt"
  sshfs_mnt="$mnt"
}

sshfs_cleanup() {
  [ -n "$sshfs_mnt" ] && { fusermount3 -u -z "$sshfs_mnt" 2>/dev/null || true; }
  [ -n "$sshfs_pid" ] && { kill "$sshfs_pid" 2>/dev/null || true; }
  sshfs_pid="" sshfs_mnt=""
}
