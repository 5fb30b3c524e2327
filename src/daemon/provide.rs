//! What the daemon provides in the IPFS DHT (config `ipfs_dht`): the roots Bitswap
//! serves strangers, that is my drive's root while it is open to everyone and every
//! pin the access rule lets out (what `add`, `import` and `pin` stored). The node gets
//! the whole list at start and again whenever it changes; the node's DHTs announce the
//! new roots and republish all of them before their records expire.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use cid::Cid;
use tracing::{info, warn};

use crate::access::Access;
use crate::drive::Drive;
use crate::net::NetHandle;
use crate::repo::Config;
use crate::store::rocks::RocksStore;

/// How often pins and the drive's root are looked at for changes.
const RESCAN: Duration = Duration::from_secs(2);

/// Starts providing, if `ipfs_dht` is on and Bitswap serves (a provider that does not
/// serve would send every asker away). Ends with the drive.
pub fn start(
    config: &Config,
    drive: Weak<Drive>,
    store: Arc<RocksStore>,
    access: Arc<dyn Access>,
    net: NetHandle,
) {
    if !config.ipfs_dht {
        return;
    }
    if !config.bitswap {
        warn!("ipfs_dht is on but bitswap is off: nothing is provided in the IPFS DHT");
        return;
    }
    info!("IPFS DHT on: providing the roots Bitswap serves");
    std::thread::Builder::new()
        .name("peerfs-provide".into())
        .spawn(move || {
            let mut roots = Roots::default();
            let mut last = None;
            loop {
                let Some(drive) = drive.upgrade() else { return };
                let root = drive.status().root;
                drop(drive);
                match roots.list(&store, access.as_ref(), root) {
                    Ok(list) if last.as_ref() != Some(&list) => {
                        net.provide(list.clone());
                        last = Some(list);
                    }
                    Ok(_) => {}
                    Err(e) => warn!("listing the roots to provide: {e}"),
                }
                std::thread::sleep(RESCAN);
            }
        })
        .map(drop)
        .unwrap_or_else(|e| warn!("cannot start providing in the IPFS DHT: {e}"));
}

/// Which roots may be served, judged once each (a pin's judgement does not change
/// while it stays pinned; the drive's root is judged anew when it changes).
#[derive(Default)]
struct Roots {
    judged: HashMap<Cid, bool>,
}

impl Roots {
    /// The drive's root first, then the pins, each once, those `access` lets out.
    fn list(
        &mut self,
        store: &RocksStore,
        access: &dyn Access,
        drive_root: Option<Cid>,
    ) -> Result<Vec<Cid>, crate::store::StoreError> {
        let mut seen = HashSet::new();
        let candidates: Vec<Cid> = drive_root
            .into_iter()
            .chain(store.pins()?.into_iter().map(|(cid, _)| cid))
            .filter(|cid| seen.insert(*cid))
            .collect();
        self.judged.retain(|cid, _| seen.contains(cid));
        let mut out = Vec::new();
        for cid in candidates {
            let ok = match self.judged.get(&cid) {
                Some(ok) => *ok,
                None => {
                    let ok = access.may_serve(&cid)?;
                    self.judged.insert(cid, ok);
                    ok
                }
            };
            if ok {
                out.push(cid);
            }
        }
        Ok(out)
    }
}
