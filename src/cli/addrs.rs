//! The addresses another machine can dial: a wildcard listen address
//! (`/ip4/0.0.0.0/…`, `/ip6/::/…`) stands for each of this machine's interface addresses,
//! and each address gets a word saying who can reach it.

use std::cmp::Reverse;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;

/// Who can reach an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Only programs on this machine (127.0.0.1, ::1).
    Loopback,
    /// Machines on the same network (private and link-local ranges).
    Lan,
    /// Anyone on the internet (unless a firewall says otherwise).
    Public,
}

impl Scope {
    pub fn of(addr: &Multiaddr) -> Scope {
        match ip_of(addr) {
            Some(ip) if ip.is_loopback() => Scope::Loopback,
            Some(IpAddr::V4(ip)) if ip.is_private() || ip.is_link_local() => Scope::Lan,
            // fc00::/7 (unique local) and fe80::/10 (link local).
            Some(IpAddr::V6(ip)) if (ip.segments()[0] & 0xfe00) == 0xfc00 => Scope::Lan,
            Some(IpAddr::V6(ip)) if (ip.segments()[0] & 0xffc0) == 0xfe80 => Scope::Lan,
            // A DNS name, or a public IP.
            _ => Scope::Public,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Scope::Loopback => "this machine only",
            Scope::Lan => "local network",
            Scope::Public => "public",
        }
    }
}

/// `addrs` with each wildcard replaced by this machine's addresses of its family, without
/// duplicates, the widest-reaching first.
pub fn dialable(addrs: &[Multiaddr]) -> Vec<Multiaddr> {
    let interfaces = interface_ips();
    let mut out: Vec<Multiaddr> = Vec::new();
    for addr in addrs {
        let expanded = match ip_of(addr) {
            Some(ip) if ip.is_unspecified() => interfaces
                .iter()
                .filter(|i| i.is_ipv4() == ip.is_ipv4())
                .map(|i| with_ip(addr, *i))
                .collect(),
            _ => vec![addr.clone()],
        };
        for a in expanded {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out.sort_by_key(|a| Reverse(Scope::of(a)));
    out
}

/// Whether the address names no port yet (`tcp/0`: one is chosen when the daemon starts).
pub fn port_unknown(addr: &Multiaddr) -> bool {
    addr.iter()
        .any(|p| matches!(p, Protocol::Tcp(0) | Protocol::Udp(0)))
}

fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    match addr.iter().next()? {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    }
}

fn with_ip(addr: &Multiaddr, ip: IpAddr) -> Multiaddr {
    let first = match ip {
        IpAddr::V4(ip) => Protocol::Ip4(ip),
        IpAddr::V6(ip) => Protocol::Ip6(ip),
    };
    std::iter::once(first).chain(addr.iter().skip(1)).collect()
}

/// The addresses of this machine's interfaces that are up. IPv6 link-local addresses
/// are left out: they need an interface name to be dialled, which a multiaddr cannot
/// carry.
fn interface_ips() -> Vec<IpAddr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we free below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Vec::new();
    }
    let mut ips = Vec::new();
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        let up = entry.ifa_flags & libc::IFF_UP as libc::c_uint != 0;
        if !up || entry.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr whose family says its real type.
        let ip = unsafe {
            match i32::from((*entry.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sa = &*(entry.ifa_addr as *const libc::sockaddr_in);
                    IpAddr::V4(Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)))
                }
                libc::AF_INET6 => {
                    let sa = &*(entry.ifa_addr as *const libc::sockaddr_in6);
                    IpAddr::V6(Ipv6Addr::from(sa.sin6_addr.s6_addr))
                }
                _ => continue,
            }
        };
        let link_local_v6 = matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
        if !link_local_v6 && !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    ips
}
