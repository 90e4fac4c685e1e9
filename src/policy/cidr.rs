//! Address ranges (`10.0.0.0/8`, `2001:db8::/32`, or a single address) for caller and
//! trusted-proxy lists.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, addr: IpAddr) -> bool {
        // IPv4 peers may arrive as IPv4-mapped IPv6 on dual-stack listeners.
        match (self.network, addr.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(a)) => masked(u32::from(net).into(), u32::from(a).into(), 32, self.prefix),
            (IpAddr::V6(net), IpAddr::V6(a)) => masked(u128::from(net), u128::from(a), 128, self.prefix),
            _ => false,
        }
    }
}

fn masked(net: u128, addr: u128, bits: u8, prefix: u8) -> bool {
    let shift = u32::from(bits - prefix);
    let mask = if prefix == 0 { 0 } else { (u128::MAX >> (128 - u32::from(bits))) >> shift << shift };
    net & mask == addr & mask
}

impl FromStr for Cidr {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr.parse().map_err(|_| ())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or(())?,
        };
        Ok(Cidr { network: network.to_canonical(), prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap_or_else(|()| panic!("{s}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn matches_prefixes_of_both_families() {
        assert!(cidr("10.0.0.0/8").contains(ip("10.200.3.4")));
        assert!(!cidr("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(cidr("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(!cidr("127.0.0.1").contains(ip("127.0.0.2")));
        assert!(cidr("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(cidr("2001:db8::/32").contains(ip("2001:db8:1::5")));
        assert!(!cidr("2001:db8::/32").contains(ip("2001:db9::5")));
        assert!(cidr("10.0.0.0/8").contains(ip("::ffff:10.1.2.3")), "IPv4-mapped peers count as IPv4");
        assert!(!cidr("10.0.0.0/8").contains(ip("2001:db8::1")));
    }

    #[test]
    fn refuses_malformed_ranges() {
        for bad in ["10.0.0.0/33", "::/129", "10.0.0/8", "host/8", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
