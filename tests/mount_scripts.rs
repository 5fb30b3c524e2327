//! The mount scripts as users run them: an /etc/fstab line and `mount -t fuse.peerfs`
//! through mount(8) and `mount.peerfs`, a plain `umount`, and the systemd user unit's
//! own command lines.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{bin, bytes, daemon_pid, pid_alive, wait_for, write, Mounted, TestRepo};

const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/mount-scripts");
/// Where mount(8) looks for the helper of type `fuse.peerfs`.
const HELPER: &str = "/sbin/mount.fuse.peerfs";

/// `/sbin/mount.fuse.peerfs` linked to this checkout's helper for the test. Whatever was
/// there (an installed helper, a link to another checkout) is moved aside and put back
/// on drop.
struct HelperLink {
    saved: Option<PathBuf>,
}

impl HelperLink {
    fn install() -> HelperLink {
        let ours = Path::new(SCRIPTS).join("mount.peerfs");
        let saved = fs::symlink_metadata(HELPER).is_ok().then(|| {
            let aside = PathBuf::from(format!("{HELPER}.saved-by-peerfs-test"));
            fs::rename(HELPER, &aside).expect("moving the installed helper aside");
            aside
        });
        symlink(&ours, HELPER).expect("linking the mount helper into /sbin needs root");
        HelperLink { saved }
    }
}

impl Drop for HelperLink {
    fn drop(&mut self) {
        let _ = fs::remove_file(HELPER);
        if let Some(aside) = &self.saved {
            let _ = fs::rename(aside, HELPER);
        }
    }
}

/// A daemon the test started some other way than `Mounted`: unmounted and, if still
/// alive, killed on drop.
struct Started {
    pid: u32,
    mnt: PathBuf,
}

impl Started {
    fn wait_exit(&self) {
        wait_for("the daemon to exit", Duration::from_secs(15), || {
            !pid_alive(self.pid)
        });
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if pid_alive(self.pid) {
            let _ = Command::new("kill")
                .args(["-9", &self.pid.to_string()])
                .status();
        }
        let _ = Command::new("fusermount3")
            .arg("-uz")
            .arg(&self.mnt)
            .output();
    }
}

/// Runs mount(8) or umount(8) with these arguments, bounded by `timeout(1)`; panics
/// with its output if it fails.
fn run(program: &str, args: &[&OsStr]) -> String {
    let mut cmd = Command::new("timeout");
    cmd.args(["60", program])
        .args(args)
        .env("PEERFS_BIN", bin());
    let out = cmd.stdin(Stdio::null()).output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A repo whose config keeps the daemon on loopback: the scripts pass no flags.
fn loopback_repo(repo: &TestRepo) {
    repo.set_config("listen", r#"["/ip4/127.0.0.1/tcp/0"]"#);
    repo.set_config("mdns", "false");
}

#[test]
fn an_fstab_line_and_mount_t_mount_the_drive_and_umount_commits() {
    let _helper = HelperLink::install();
    let repo = TestRepo::new();
    loopback_repo(&repo);
    let mnt = repo.dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let fstab = repo.dir.path().join("fstab");
    fs::write(
        &fstab,
        format!(
            "# a test fstab\n{} {} fuse.peerfs defaults,noauto,_netdev 0 0\n",
            repo.path().display(),
            mnt.display()
        ),
    )
    .unwrap();

    // mount(8) finds the line by its mount point, and the helper by the type.
    let out = run("mount", &["-T".as_ref(), fstab.as_ref(), mnt.as_ref()]);
    let daemon = Started {
        pid: daemon_pid(&out),
        mnt: mnt.clone(),
    };
    let data = bytes(3 << 20, 7);
    write(&mnt.join("drive/kept.bin"), &data);
    let status = repo.ok(&["status"]);
    assert!(status.contains(mnt.to_str().unwrap()), "{status}");

    // A plain umount, not `peerfs unmount`: the daemon commits and exits.
    run("umount", &[mnt.as_ref()]);
    daemon.wait_exit();
    repo.ok(&["fsck"]);

    let source = repo.path();
    let out = run(
        "mount",
        &[
            "-t".as_ref(),
            "fuse.peerfs".as_ref(),
            "-o".as_ref(),
            "rw".as_ref(),
            source.as_ref(),
            mnt.as_ref(),
        ],
    );
    let daemon = Started {
        pid: daemon_pid(&out),
        mnt: mnt.clone(),
    };
    assert!(fs::read(mnt.join("drive/kept.bin")).unwrap() == data);
    run("umount", &[mnt.as_ref()]);
    daemon.wait_exit();
}

/// The unit's `Key=` command line with `%h` replaced, split on spaces (it quotes nothing).
fn unit_command(unit: &str, key: &str, home: &Path) -> Vec<String> {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in the unit"));
    line.replace("%h", home.to_str().unwrap())
        .split(' ')
        .map(str::to_string)
        .collect()
}

fn spawn(argv: &[String], home: &Path) -> Child {
    Command::new(&argv[0])
        .args(&argv[1..])
        .env("HOME", home)
        .env_remove("PEERFS_HOME")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

#[test]
fn the_systemd_unit_mounts_the_default_repo_and_stops_cleanly() {
    let unit = fs::read_to_string(Path::new(SCRIPTS).join("peerfs.service")).unwrap();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    // The unit runs the binary `cargo install` puts in ~/.cargo/bin.
    fs::create_dir_all(home.join(".cargo/bin")).unwrap();
    symlink(bin(), home.join(".cargo/bin/peerfs")).unwrap();

    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        let runtime = home.join("run");
        fs::create_dir(&runtime).unwrap();
        let unit_copy = home.join("peerfs.service");
        fs::write(&unit_copy, &unit).unwrap();
        let out = Command::new("systemd-analyze")
            .args(["verify", "--user"])
            .arg(&unit_copy)
            .env("HOME", home)
            .env("XDG_RUNTIME_DIR", &runtime)
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "systemd-analyze verify: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("systemd-analyze not installed: checking the unit's commands only");
    }

    let default_repo = TestRepo::init_at(&home.join(".local/share/peerfs"));
    loopback_repo(&default_repo);

    let mut pre = spawn(&unit_command(&unit, "ExecStartPre", home), home);
    assert!(pre.wait().unwrap().success());
    let mut daemon = spawn(&unit_command(&unit, "ExecStart", home), home);
    let mnt = home.join("peerfs");
    let guard = Started {
        pid: daemon.id(),
        mnt: mnt.clone(),
    };
    wait_for("the unit's mount", Duration::from_secs(30), || {
        mnt.join("drive").is_dir()
    });
    write(&mnt.join("drive/note.txt"), b"from the unit\n");

    let stop_argv = unit_command(&unit, "ExecStop", home);
    let stop = Command::new(&stop_argv[0])
        .args(&stop_argv[1..])
        .env("HOME", home)
        .env_remove("PEERFS_HOME")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        stop.status.success(),
        "ExecStop failed: {}",
        String::from_utf8_lossy(&stop.stderr)
    );
    // Type=simple: the main process ending with 0 is a clean stop for systemd.
    wait_for("the unit's daemon to exit", Duration::from_secs(15), || {
        matches!(daemon.try_wait(), Ok(Some(_)))
    });
    assert!(daemon.wait().unwrap().success());
    drop(guard);

    // What the unit's mount wrote is in the default repo.
    let again = Mounted::with_repo(default_repo);
    assert_eq!(
        fs::read(again.drive().join("note.txt")).unwrap(),
        b"from the unit\n"
    );
}
