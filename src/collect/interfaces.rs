//! The address → interface map used to name the interface of bound listeners and connections.
//!
//! Built once per sample from `getifaddrs(3)` (spec: metrics-report.md D.18: never look interfaces
//! up per socket), then consulted by pure code.

use std::collections::HashMap;
use std::ffi::CStr;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Name used for loopback addresses when no interface carries the loopback flag.
const DEFAULT_LOOPBACK: &str = "lo";

/// Which interface owns which local address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceMap {
    by_addr: HashMap<IpAddr, String>,
    loopback: Option<String>,
}

impl InterfaceMap {
    /// A map from explicit `(address, interface)` pairs; the first pair for an address wins.
    /// `loopback` names the loopback interface (default `lo`).
    pub fn from_pairs<I, S>(pairs: I, loopback: Option<String>) -> Self
    where
        I: IntoIterator<Item = (IpAddr, S)>,
        S: Into<String>,
    {
        let mut by_addr = HashMap::new();
        for (ip, name) in pairs {
            by_addr.entry(normalise(ip)).or_insert_with(|| name.into());
        }
        InterfaceMap { by_addr, loopback }
    }

    /// The host's current map, from `getifaddrs(3)` (the agent's own network namespace).
    pub fn from_system() -> io::Result<Self> {
        let mut pairs = Vec::new();
        let mut loopback = None;
        let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
        // SAFETY: getifaddrs fills `head` with a list we own until freeifaddrs.
        if unsafe { libc::getifaddrs(&mut head) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut cursor = head;
        while !cursor.is_null() {
            // SAFETY: `cursor` is a node of the list returned above, not yet freed.
            let ifa = unsafe { &*cursor };
            cursor = ifa.ifa_next;
            if ifa.ifa_name.is_null() {
                continue;
            }
            // SAFETY: ifa_name is a NUL-terminated string owned by the list.
            let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
                .to_string_lossy()
                .into_owned();
            if ifa.ifa_flags & (libc::IFF_LOOPBACK as libc::c_uint) != 0 && loopback.is_none() {
                loopback = Some(name.clone());
            }
            if ifa.ifa_addr.is_null() {
                continue;
            }
            // SAFETY: ifa_addr points to a sockaddr whose family tells its real type and size.
            let ip = unsafe {
                match i32::from((*ifa.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        // s_addr is in network byte order in memory.
                        Some(IpAddr::V4(Ipv4Addr::from(
                            sin.sin_addr.s_addr.to_ne_bytes(),
                        )))
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
                    }
                    _ => None,
                }
            };
            if let Some(ip) = ip {
                pairs.push((ip, name));
            }
        }
        // SAFETY: `head` came from getifaddrs and is freed exactly once; no reference outlives it.
        unsafe { libc::freeifaddrs(head) };
        Ok(Self::from_pairs(pairs, loopback))
    }

    /// The interface owning `ip`. Wildcards (`0.0.0.0`, `::`) have none; loopback addresses
    /// (`127.0.0.0/8`, `::1`) resolve to the loopback interface even when only `127.0.0.1` is
    /// configured on it (e.g. a resolver on `127.0.0.53`).
    pub fn resolve(&self, ip: IpAddr) -> Option<&str> {
        let ip = normalise(ip);
        if ip.is_unspecified() {
            return None;
        }
        if let Some(name) = self.by_addr.get(&ip) {
            return Some(name);
        }
        if ip.is_loopback() {
            return Some(self.loopback.as_deref().unwrap_or(DEFAULT_LOOPBACK));
        }
        None
    }
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) becomes IPv4 (spec: metrics-report.md D.7); all else as is.
pub fn normalise(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mapped_ipv6_addresses_become_ipv4() {
        assert_eq!(normalise(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(normalise(ip("2001:db8::1")), ip("2001:db8::1"));
        assert_eq!(normalise(ip("10.0.0.1")), ip("10.0.0.1"));
    }

    #[test]
    fn wildcards_have_no_interface_and_loopback_is_lo() {
        let map = InterfaceMap::from_pairs([(ip("192.0.2.1"), "eth0")], None);
        assert_eq!(map.resolve(ip("0.0.0.0")), None);
        assert_eq!(map.resolve(ip("::")), None);
        assert_eq!(map.resolve(ip("127.0.0.53")), Some("lo"));
        assert_eq!(map.resolve(ip("::1")), Some("lo"));
        assert_eq!(map.resolve(ip("::ffff:192.0.2.1")), Some("eth0"));
        assert_eq!(map.resolve(ip("198.51.100.1")), None);
    }

    #[test]
    fn the_first_interface_listed_for_an_address_wins() {
        let map = InterfaceMap::from_pairs(
            [(ip("fe80::1"), "eth0"), (ip("fe80::1"), "wlan0")],
            Some("lo0".into()),
        );
        assert_eq!(map.resolve(ip("fe80::1")), Some("eth0"));
        assert_eq!(map.resolve(ip("127.0.0.1")), Some("lo0"));
    }

    #[test]
    fn the_system_map_knows_the_loopback_interface() {
        let map = InterfaceMap::from_system().unwrap();
        assert_eq!(map.resolve(ip("127.0.0.1")), Some("lo"));
    }
}
