//! Instance address ranges and allocation. Pure: no I/O.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An IPv4 range in CIDR form, such as `10.213.0.0/16`.
///
/// The first host address (`.0.1` of `10.213.0.0/16`) is the gateway (the
/// bridge's address on the host); instances get the addresses after it, up
/// to but excluding the broadcast address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AddressRange {
    network: Ipv4Addr,
    prefix: u8,
}

impl AddressRange {
    /// The range `network/prefix`; `network` must have no host bits set and
    /// `prefix` must leave room for a gateway and at least one instance (8..=30).
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Self, String> {
        if !(8..=30).contains(&prefix) {
            return Err(format!("prefix /{prefix} is outside /8../30"));
        }
        let mask = Self::mask_of(prefix);
        if u32::from(network) & !mask != 0 {
            return Err(format!("{network}/{prefix} has host bits set"));
        }
        Ok(Self { network, prefix })
    }

    fn mask_of(prefix: u8) -> u32 {
        u32::MAX << (32 - u32::from(prefix))
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The gateway: the first host address, given to the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// The broadcast (last) address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !Self::mask_of(self.prefix))
    }

    /// Whether `addr` lies in the range (network and broadcast included).
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & Self::mask_of(self.prefix) == u32::from(self.network)
    }

    /// How many addresses instances can get.
    pub fn instance_capacity(&self) -> u32 {
        // network, gateway and broadcast are not handed out
        (!Self::mask_of(self.prefix)).saturating_sub(2)
    }

    fn first_instance(&self) -> u32 {
        u32::from(self.network) + 2
    }

    fn last_instance(&self) -> u32 {
        u32::from(self.broadcast()) - 1
    }

    /// The next free instance address after `after` (or from the start of the
    /// range), wrapping around once; `None` when every address is in `used`.
    ///
    /// Handing out addresses round-robin rather than lowest-first keeps a
    /// just-released address out of use for as long as possible.
    pub fn allocate(&self, used: &BTreeSet<Ipv4Addr>, after: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        let first = self.first_instance();
        let last = self.last_instance();
        let start = match after {
            Some(a) if self.contains(a) && u32::from(a) >= first && u32::from(a) < last => {
                u32::from(a) + 1
            }
            _ => first,
        };
        (start..=last)
            .chain(first..start)
            .map(Ipv4Addr::from)
            .find(|a| !used.contains(a))
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for AddressRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (net, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not in CIDR form (a.b.c.d/n)"))?;
        let network: Ipv4Addr = net.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let prefix: u8 = prefix.parse().map_err(|e| format!("{s:?}: {e}"))?;
        Self::new(network, prefix)
    }
}

impl TryFrom<String> for AddressRange {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<AddressRange> for String {
    fn from(r: AddressRange) -> Self {
        r.to_string()
    }
}

impl Default for AddressRange {
    /// `10.213.0.0/16`.
    fn default() -> Self {
        Self {
            network: Ipv4Addr::new(10, 213, 0, 0),
            prefix: 16,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn r(s: &str) -> AddressRange {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_describes_ranges() {
        let d = AddressRange::default();
        assert_eq!(d.to_string(), "10.213.0.0/16");
        assert_eq!(d.gateway(), Ipv4Addr::new(10, 213, 0, 1));
        assert_eq!(d.broadcast(), Ipv4Addr::new(10, 213, 255, 255));
        assert_eq!(d.instance_capacity(), 65533);
        assert_eq!(r("10.214.7.0/24").gateway(), Ipv4Addr::new(10, 214, 7, 1));
        assert!(r("10.214.7.0/24").contains(Ipv4Addr::new(10, 214, 7, 200)));
        assert!(!r("10.214.7.0/24").contains(Ipv4Addr::new(10, 214, 8, 1)));
        for bad in [
            "10.213.0.1/16",
            "10.213.0.0",
            "10.213.0.0/31",
            "10.213.0.0/4",
            "x/16",
            "10.213.0.0/x",
        ] {
            assert!(bad.parse::<AddressRange>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, "\"10.213.0.0/16\"");
        assert_eq!(serde_json::from_str::<AddressRange>(&json).unwrap(), d);
    }

    #[test]
    fn allocates_the_next_free_address_round_robin() {
        let range = r("10.214.1.0/29"); // instances: .2 ..= .6
        let mut used = BTreeSet::new();
        let a = range.allocate(&used, None).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 214, 1, 2));
        used.insert(a);
        let b = range.allocate(&used, Some(a)).unwrap();
        assert_eq!(b, Ipv4Addr::new(10, 214, 1, 3));
        used.insert(b);
        // releasing .2 does not make it the next one: allocation moves on
        used.remove(&a);
        let c = range.allocate(&used, Some(b)).unwrap();
        assert_eq!(c, Ipv4Addr::new(10, 214, 1, 4));
        used.insert(c);
        let d = range.allocate(&used, Some(c)).unwrap();
        let e = range.allocate(&BTreeSet::from([b, c, d]), Some(d)).unwrap();
        assert_eq!(e, Ipv4Addr::new(10, 214, 1, 6));
        // wraps around to the released .2, never to a live one, never to the broadcast
        let f = range
            .allocate(&BTreeSet::from([b, c, d, e]), Some(e))
            .unwrap();
        assert_eq!(f, Ipv4Addr::new(10, 214, 1, 2));
        assert_eq!(
            range.allocate(&BTreeSet::from([b, c, d, e, f]), Some(f)),
            None
        );
        // a cursor outside the range starts from the beginning
        assert_eq!(
            range.allocate(&BTreeSet::new(), Some(Ipv4Addr::new(192, 0, 2, 1))),
            Some(Ipv4Addr::new(10, 214, 1, 2))
        );
    }

    #[test]
    fn never_hands_out_a_used_address() {
        let range = r("10.214.2.0/27");
        let mut used = BTreeSet::new();
        let mut cursor = None;
        for _ in 0..range.instance_capacity() {
            let a = range.allocate(&used, cursor).unwrap();
            assert!(range.contains(a));
            assert_ne!(a, range.gateway());
            assert_ne!(a, range.broadcast());
            assert_ne!(a, range.network());
            assert!(used.insert(a), "{a} handed out twice");
            cursor = Some(a);
        }
        assert_eq!(range.allocate(&used, cursor), None);
    }
}
