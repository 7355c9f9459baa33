//! Criteria operators: numeric comparisons, set membership (ports, CIDRs, strings, numbers),
//! nearest-rank percentiles and the local-baseline robust z score. All "normal iff" as AWS reads it.
//!
//! spec: detect.md §1.1 (criteria describe NORMAL behaviour), §3.1, §3.2, §3.5, §7.2.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// A numeric comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NumOp {
    /// `less-than`
    Lt,
    /// `less-than-equals`
    Le,
    /// `greater-than`
    Gt,
    /// `greater-than-equals`
    Ge,
}

impl NumOp {
    /// Parses the API text.
    pub fn parse(s: &str) -> Option<NumOp> {
        Some(match s {
            "less-than" => NumOp::Lt,
            "less-than-equals" => NumOp::Le,
            "greater-than" => NumOp::Gt,
            "greater-than-equals" => NumOp::Ge,
            _ => return None,
        })
    }

    /// Whether `x` is NORMAL against threshold `v` (spec: detect.md §3.1 table).
    pub fn is_normal(self, x: f64, v: f64) -> bool {
        match self {
            NumOp::Lt => x < v,
            NumOp::Le => x <= v,
            NumOp::Gt => x > v,
            NumOp::Ge => x >= v,
        }
    }

    /// Whether the worst case is the maximum (less-than*) rather than the minimum (§3.3).
    pub fn worst_is_max(self) -> bool {
        matches!(self, NumOp::Lt | NumOp::Le)
    }
}

/// Compares two u64 exactly (spec: detect.md §3.1 "otherwise compare as u64").
pub fn is_normal_u64(op: NumOp, x: u64, v: u64) -> bool {
    match op {
        NumOp::Lt => x < v,
        NumOp::Le => x <= v,
        NumOp::Gt => x > v,
        NumOp::Ge => x >= v,
    }
}

/// An IPv4 or IPv6 network with host bits masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cidr {
    /// Network address (host bits cleared).
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

/// Why a CIDR text is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// Length or character set outside the API pattern (2..43 chars of `[a-fA-F0-9:./]`).
    #[error("cidr {0:?} must be 2-43 characters of [a-fA-F0-9:./]")]
    Pattern(String),
    /// Not an address.
    #[error("cidr {0:?} is not a valid IP address or CIDR")]
    Address(String),
    /// Prefix longer than the family allows.
    #[error("cidr {0:?} has a prefix longer than {1}")]
    Prefix(String, u8),
}

impl Cidr {
    /// Parses `a.b.c.d/n`, `v6/n` or a bare address (a host), masking host bits (spec: §3.2).
    pub fn parse(text: &str) -> Result<Cidr, CidrError> {
        let pattern_ok = (2..=43).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.' | b'/'));
        if !pattern_ok {
            return Err(CidrError::Pattern(text.to_owned()));
        }
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| CidrError::Address(text.to_owned()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => {
                let n: u32 = p.parse().map_err(|_| CidrError::Address(text.to_owned()))?;
                if n > u32::from(max) {
                    return Err(CidrError::Prefix(text.to_owned(), max));
                }
                n as u8 // Invariant: n <= 128 checked above.
            }
        };
        Ok(Cidr {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// Whether `ip` lies in this network. IPv4-mapped IPv6 addresses match as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = normalise(ip);
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.prefix) == self.addr
            }
            _ => false,
        }
    }
}

/// Maps `::ffff:a.b.c.d` to `a.b.c.d` (spec: detect.md §3.2, TC14).
pub fn normalise(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// A prefix longer than the family's width (only from a deserialized `Cidr`, as `parse` refuses
/// it) masks nothing.
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << 32u32.saturating_sub(u32::from(prefix))
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << 128u32.saturating_sub(u32::from(prefix))
            };
            IpAddr::V6((bits & m).into())
        }
    }
}

/// `in-*` (allow list) or `not-in-*` (deny list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetOp {
    /// Normal iff every observed element is in the set.
    In,
    /// Normal iff no observed element is in the set.
    NotIn,
}

impl SetOp {
    /// Parses any of the six set operators, returning the polarity.
    pub fn parse(s: &str) -> Option<SetOp> {
        match s {
            "in-port-set" | "in-cidr-set" | "in-set" => Some(SetOp::In),
            "not-in-port-set" | "not-in-cidr-set" | "not-in-set" => Some(SetOp::NotIn),
            _ => None,
        }
    }

    /// Normal iff the predicate "x is in S" holds for all x (In) or for none (NotIn).
    /// An empty observation is always normal (spec: detect.md §3.2, S8).
    pub fn is_normal<T>(self, observed: &[T], member: impl Fn(&T) -> bool) -> bool {
        match self {
            SetOp::In => observed.iter().all(member),
            SetOp::NotIn => !observed.iter().any(member),
        }
    }
}

/// Nearest-rank percentile of `sorted` (ascending, non-empty): k = max(1, ceil(p/100·n)).
/// spec: detect.md §3.5.
pub fn nearest_rank(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    sorted.get(nearest_rank_k(sorted.len(), p) - 1).copied()
}

/// The 1-based nearest rank of percentile `p` among `n` values: max(1, ceil(p/100·n)), at most
/// `n` (spec: detect.md §3.5).
pub fn nearest_rank_k(n: usize, p: f64) -> usize {
    let k = ((p / 100.0) * n as f64).ceil() as usize;
    k.clamp(1, n.max(1))
}

/// Median of a sorted slice.
pub fn median_sorted(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    // Invariant: n > 0, so n / 2 and n / 2 - 1 (n even, so n >= 2) are in range.
    Some(if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    })
}

/// Median and MAD of the values (spec: detect.md §7.2).
pub fn median_mad(values: &[f64]) -> Option<(f64, f64)> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let med = median_sorted(&v)?;
    let mut dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
    dev.sort_by(f64::total_cmp);
    Some((med, median_sorted(&dev)?))
}

/// Two-sided robust z: |x − median| / max(1.4826·MAD, floor).
pub fn robust_z(x: f64, median: f64, mad: f64, floor: f64) -> f64 {
    (x - median).abs() / (1.4826 * mad).max(floor)
}

/// The z threshold of an ML confidence level (HIGH 5, MEDIUM 4, LOW 3).
pub fn z_threshold(level: &str) -> Option<f64> {
    match level {
        "HIGH" => Some(5.0),
        "MEDIUM" => Some(4.0),
        "LOW" => Some(3.0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn boundaries_follow_the_normal_behaviour_reading_tc04() {
        assert!(!NumOp::Lt.is_normal(5.0, 5.0));
        assert!(NumOp::Le.is_normal(5.0, 5.0));
        assert!(!NumOp::Gt.is_normal(5.0, 5.0));
        assert!(NumOp::Ge.is_normal(5.0, 5.0));
        assert!(!is_normal_u64(NumOp::Lt, 5, 5));
        assert!(is_normal_u64(NumOp::Ge, 5, 5));
    }

    #[test]
    fn cidrs_mask_host_bits_and_bare_ips_are_hosts_tc15() {
        let c = Cidr::parse("10.1.2.3/8").unwrap();
        assert_eq!(c, Cidr::parse("10.0.0.0/8").unwrap());
        let h = Cidr::parse("10.0.0.1").unwrap();
        assert!(h.contains(ip("10.0.0.1")));
        assert!(!h.contains(ip("10.0.0.2")));
    }

    #[test]
    fn ipv6_matches_only_ipv6_and_mapped_v4_matches_v4_tc13_tc14() {
        let c = Cidr::parse("2001:db8::/32").unwrap();
        assert!(c.contains(ip("2001:db8:0:1::5")));
        assert!(!c.contains(ip("2001:db9::1")));
        assert!(!c.contains(ip("1.2.3.4")));
        assert!(Cidr::parse("10.0.0.0/8")
            .unwrap()
            .contains(ip("::ffff:10.0.0.1")));
    }

    #[test]
    fn a_deserialized_cidr_with_a_prefix_longer_than_its_family_does_not_panic() {
        let v4: Cidr = serde_json::from_str(r#"{"addr":"10.0.0.1","prefix":40}"#).unwrap();
        assert!(v4.contains(ip("10.0.0.1")));
        assert!(!v4.contains(ip("10.0.0.2")));
        let v6: Cidr = serde_json::from_str(r#"{"addr":"2001:db8::1","prefix":200}"#).unwrap();
        assert!(v6.contains(ip("2001:db8::1")));
    }

    #[test]
    fn bad_cidrs_are_rejected() {
        assert!(matches!(
            Cidr::parse("10.0.0.0/33"),
            Err(CidrError::Prefix(..))
        ));
        assert!(matches!(
            Cidr::parse("2001:db8::/129"),
            Err(CidrError::Prefix(..))
        ));
        assert!(matches!(Cidr::parse("x"), Err(CidrError::Pattern(..))));
        assert!(matches!(
            Cidr::parse("10.0.0.300"),
            Err(CidrError::Address(..))
        ));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
    }

    #[test]
    fn an_empty_observation_is_normal_for_both_polarities() {
        let empty: [u16; 0] = [];
        assert!(SetOp::In.is_normal(&empty, |_| false));
        assert!(SetOp::NotIn.is_normal(&empty, |_| true));
    }

    #[test]
    fn nearest_rank_matches_the_tc24_table() {
        let h: Vec<f64> = (1..=100).map(f64::from).collect();
        for (p, want) in [
            (0.0, 1.0),
            (0.01, 1.0),
            (0.1, 1.0),
            (1.0, 1.0),
            (10.0, 10.0),
            (50.0, 50.0),
            (90.0, 90.0),
            (99.0, 99.0),
            (99.9, 100.0),
            (99.99, 100.0),
            (100.0, 100.0),
        ] {
            assert_eq!(nearest_rank(&h, p), Some(want), "p{p}");
        }
        let mut h7 = vec![3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0];
        h7.sort_by(f64::total_cmp);
        assert_eq!(nearest_rank(&h7, 50.0), Some(3.0));
    }

    #[test]
    fn robust_z_matches_tc35() {
        let z = |x| robust_z(x, 100.0, 10.0, 1.0);
        assert!((z(180.0) - 5.396).abs() < 0.01);
        assert!((z(170.0) - 4.721).abs() < 0.01);
        assert!((z(150.0) - 3.372).abs() < 0.01);
        let (m, mad) = median_mad(&[90.0, 100.0, 110.0, 100.0, 80.0]).unwrap();
        assert_eq!((m, mad), (100.0, 10.0));
    }
}
