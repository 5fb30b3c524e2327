//! Unmounting while a program still writes: every write the program was told succeeded
//! is in the drive after a remount, however the mount ends (issue 18, item 1).

mod common;

use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{wait_for, Mounted};

const LINES: usize = 6;

/// A writer that appends a line every 0.3 s to DIR/drive/log, as a logger does.
fn slow_writer(m: &Mounted) -> Child {
    let log = m.drive().join("log");
    Command::new("bash")
        .arg("-c")
        .arg(format!(
            "for i in $(seq 1 {LINES}); do echo \"line $i\"; sleep 0.3; done > '{}'",
            log.display()
        ))
        .stdin(Stdio::null())
        .spawn()
        .expect("start the writer")
}

fn finished(mut writer: Child) {
    let status = writer.wait().expect("wait for the writer");
    assert!(status.success(), "the writer failed: {status}");
}

/// After the mount ended: the daemon is gone; mount again and check every line.
fn remount_and_check(m: &mut Mounted) {
    wait_for("the daemon to exit", Duration::from_secs(20), || !m.alive());
    m.remount();
    let text = fs::read_to_string(m.drive().join("log")).expect("the log after remount");
    let want: String = (1..=LINES).map(|i| format!("line {i}\n")).collect();
    assert_eq!(text, want, "acknowledged writes were lost");
}

fn started(m: &Mounted) {
    wait_for("the writer's first line", Duration::from_secs(10), || {
        fs::metadata(m.drive().join("log")).is_ok_and(|meta| meta.len() > 0)
    });
}

#[test]
fn unmount_refuses_while_busy_and_names_the_holder_then_keeps_everything() {
    let mut m = Mounted::new();
    let writer = slow_writer(&m);
    started(&m);
    let mnt = m.mnt.path().to_str().unwrap().to_string();
    let refused = m.repo.fails(&["unmount", &mnt]);
    assert!(refused.contains("target is busy"), "{refused}");
    assert!(
        refused.contains(&format!("pid {}", writer.id())),
        "{refused}"
    );
    assert!(m.alive(), "a refused unmount leaves the daemon serving");
    finished(writer);
    m.unmount();
    remount_and_check(&mut m);
}

#[test]
fn lazy_unmount_detaches_at_once_and_commits_until_the_last_file_closes() {
    let mut m = Mounted::new();
    let writer = slow_writer(&m);
    started(&m);
    let mnt = m.mnt.path().to_str().unwrap().to_string();
    let said = m.repo.ok(&["unmount", "--lazy", &mnt]);
    assert!(said.contains("detached"), "{said}");
    assert!(
        fs::read_dir(m.mnt.path()).unwrap().next().is_none(),
        "the mount point is empty once detached"
    );
    finished(writer);
    remount_and_check(&mut m);
}

#[test]
fn sigterm_keeps_every_acknowledged_write() {
    let mut m = Mounted::new();
    let writer = slow_writer(&m);
    started(&m);
    Command::new("kill")
        .args(["-TERM", &m.pid.to_string()])
        .status()
        .expect("kill -TERM");
    finished(writer);
    remount_and_check(&mut m);
}

#[test]
fn plain_umount_lazy_keeps_every_acknowledged_write() {
    let mut m = Mounted::new();
    let writer = slow_writer(&m);
    started(&m);
    let busy = Command::new("umount").arg(m.mnt.path()).output().unwrap();
    assert!(!busy.status.success(), "umount of a busy mount fails");
    let lazy = Command::new("umount")
        .arg("-l")
        .arg(m.mnt.path())
        .status()
        .unwrap();
    assert!(lazy.success());
    finished(writer);
    remount_and_check(&mut m);
}
