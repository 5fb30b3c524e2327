//! mDNS discovery, for real: two daemons in a private network namespace (a veth pair,
//! nothing else) find each other by multicast. The namespace keeps the multicast off
//! this machine's own networks, which is why it is not plain loopback (mDNS skips it).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{assert_same_tree, bytes, daemon_pid, peer_id, wait_for, write, Mounted, TestRepo};

/// A network namespace with two addresses on a veth pair; deleted on drop.
struct NetNs {
    name: String,
}

impl NetNs {
    fn new() -> NetNs {
        let ns = NetNs {
            name: format!("peerfs-mdns-{}", std::process::id()),
        };
        let ip = |args: &str| {
            let out = Command::new("ip")
                .args(args.split_whitespace())
                .output()
                .expect("run ip (iproute2)");
            assert!(
                out.status.success(),
                "ip {args}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&format!("netns add {}", ns.name));
        let n = &ns.name;
        ip(&format!("-n {n} link add veth0 type veth peer name veth1"));
        ip(&format!("-n {n} addr add 10.77.0.1/24 dev veth0"));
        ip(&format!("-n {n} addr add 10.77.0.2/24 dev veth1"));
        for dev in ["lo", "veth0", "veth1"] {
            ip(&format!("-n {n} link set {dev} up"));
        }
        ns
    }

    /// `peerfs mount` (mDNS on) run inside the namespace, listening on `listen_ip`. Only the
    /// network is entered: the mount is made where the test sees it.
    fn mount(&self, listen_ip: &str) -> Mounted {
        // Open to everyone on this private network: the test is about finding peers.
        let repo = TestRepo::readable_by_everyone();
        let mnt = tempfile::tempdir().expect("temp dir");
        let listen = format!("/ip4/{listen_ip}/tcp/0");
        let inner = repo.command(&["mount", mnt.path().to_str().unwrap(), "--listen", &listen]);
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.name))
            .arg(inner.get_program())
            .args(inner.get_args())
            .output()
            .expect("run nsenter");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "mount in {}: {stdout}{}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        let pid = daemon_pid(&stdout);
        Mounted { repo, mnt, pid }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

#[test]
fn peers_on_one_network_find_each_other_by_mdns() {
    let ns = NetNs::new();
    let a = ns.mount("10.77.0.1");
    let b = ns.mount("10.77.0.2");
    write(&a.drive().join("docs/hello.txt"), b"found by multicast\n");
    write(&a.drive().join("docs/big.bin"), &bytes(3 << 20, 5));

    // B knows alice by peer ID alone: no address, no DHT node. Only mDNS can say where
    // she is.
    b.repo.ok(&["peer", "add", &peer_id(&a), "--name", "alice"]);
    let theirs = b.mnt.path().join("peers/alice/docs");
    wait_for(
        "alice's docs, found by mDNS",
        Duration::from_secs(30),
        || theirs.join("big.bin").exists(),
    );
    let local = tempfile::tempdir().unwrap();
    let copy = local.path().join("docs");
    let out = Command::new("cp")
        .arg("-a")
        .arg(&theirs)
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_tree(&a.drive().join("docs"), Path::new(&copy));
    let peers = b.repo.ok(&["peers"]);
    assert!(peers.contains("connected:   yes"), "{peers}");
    // Unmount before the namespace goes.
    drop(b);
    drop(a);
}
