//! Huge and sparse files on the mount (issue 12, finding 2): a terabyte of hole costs
//! nothing, reads as zeros, and ordinary tools see the holes.

mod common;

use std::fs;

use common::{sh, Mounted};

/// The daemon's peak resident memory, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[test]
fn a_terabyte_sparse_file_is_cheap_reads_zeros_and_keeps_its_holes() {
    let mut m = Mounted::new();
    let d = m.drive();
    sh(
        &d,
        "timeout 60 truncate -s 1T big && \
         printf middle | dd of=big bs=1 seek=$((512 << 30)) conv=notrunc status=none",
    );
    // Flat memory: far below the size of even one gigabyte of the file.
    let rss = peak_rss_kib(m.pid);
    assert!(rss < 400 << 10, "the daemon peaked at {rss} KiB");

    for round in ["mounted", "after a remount"] {
        let checks = sh(
            &d,
            "stat -c '%s %b' big; \
             dd if=big bs=1 skip=$((512 << 30)) count=6 status=none; echo; \
             dd if=big bs=4096 skip=1000 count=1 status=none | tr -d '\\0' | wc -c; \
             python3 -c 'import os; f=os.open(\"big\", os.O_RDONLY); \
               print(os.lseek(f, 0, os.SEEK_DATA), os.lseek(f, 512 << 30, os.SEEK_HOLE))'",
        );
        let lines: Vec<&str> = checks.lines().collect();
        let (size, blocks) = lines[0].split_once(' ').unwrap();
        assert_eq!(size, (1u64 << 40).to_string(), "{round}");
        let blocks: u64 = blocks.parse().unwrap();
        assert!(
            blocks <= 2 * 2048,
            "{round}: du counts {blocks} blocks of 512 bytes"
        );
        assert_eq!(lines[1], "middle", "{round}");
        assert_eq!(lines[2], "0", "{round}: a hole reads as zeros");
        let chunk = 1u64 << 20;
        let data = (512u64 << 30) / chunk * chunk;
        assert_eq!(
            lines[3],
            format!("{data} {}", data + chunk),
            "{round}: SEEK_DATA and SEEK_HOLE"
        );
        m.unmount();
        m.remount();
    }

    // cp --sparse=always follows the holes (SEEK_DATA) instead of reading a terabyte.
    let local = tempfile::tempdir().unwrap();
    sh(
        &d,
        &format!(
            "truncate -s 10G ten && printf data | dd of=ten bs=1 seek=$((3 << 30)) conv=notrunc status=none && \
             timeout 120 cp --sparse=always ten {0}/ten && \
             [ \"$(stat -c %s {0}/ten)\" = $((10 << 30)) ] && \
             [ \"$(dd if={0}/ten bs=1 skip=$((3 << 30)) count=4 status=none)\" = data ]",
            local.path().display()
        ),
    );
    let copied = sh(local.path(), "du -k ten | cut -f1");
    assert!(
        copied.trim().parse::<u64>().unwrap() < 10 << 10,
        "du -k: {copied}"
    );

    // Past the largest file the drive holds: EFBIG, as ext4 says it.
    let too_big = sh(&d, "truncate -s 17T huge 2>&1 || true");
    assert!(too_big.contains("File too large"), "{too_big}");
}
