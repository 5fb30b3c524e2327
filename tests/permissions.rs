//! What other local users meet on a mount with `allow_other`: the kernel's permission
//! rules, as on any Linux filesystem.

mod common;

use common::{sh, Mounted, TestRepo};

/// Issue 12, finding 5: a write by another user takes the set-user-ID and set-group-ID
/// bits away (ext4 reads back 0777 after each of these).
#[test]
fn a_write_by_another_user_clears_setuid_and_setgid() {
    let repo = TestRepo::new();
    repo.set_config("allow_other", "true");
    let m = Mounted::with_repo(repo);
    let d = m.drive();
    sh(&d, "chmod 777 .");
    for mode in ["4777", "2777", "6777"] {
        let after = sh(
            &d,
            &format!(
                "rm -f s && touch s && chmod {mode} s && \
                 su nobody -s /bin/sh -c 'echo hi >> {0}/s' && stat -c %a s",
                d.display()
            ),
        );
        assert_eq!(after.trim(), "777", "mode {mode} after another user wrote");
    }
}
