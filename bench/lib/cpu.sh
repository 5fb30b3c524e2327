# CPU time of processes, for the benchmarks: sourced, not run.
#
#   cpu_secs PID...     user+system seconds the processes have used so far
#   settle PID...       waits (at most 120 s) until the processes use under a tenth of
#                       a core over two seconds: a daemon that just stored a file is
#                       still compacting, and that must not be counted against a read

cpu_secs() {
  local p total=0 ticks
  ticks="$(getconf CLK_TCK)"
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    # Fields 14 and 15 (utime, stime) counted after the ") " that ends the name.
    total=$((total + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')))
  done
  echo "$total / $ticks" | bc -l
}

settle() {
  local before after
  for _ in $(seq 60); do
    before="$(cpu_secs "$@")"
    sleep 2
    after="$(cpu_secs "$@")"
    [ "$(echo "$after - $before < 0.2" | bc -l)" = 1 ] && return 0
  done
}
