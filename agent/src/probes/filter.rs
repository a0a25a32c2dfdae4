//! `--filter` expressions and their in-kernel form.
//!
//! Grammar: primitives joined by `and` (every primitive must hold):
//!
//! ```text
//! host ADDR[/LEN]   src ADDR[/LEN]   dst ADDR[/LEN]
//! port N            sport N          dport N
//! proto tcp|udp|icmp|icmpv6|N        ip | ip6
//! dev IFNAME        netns INODE[,INODE...]   (up to 8 namespaces)
//! ```
//!
//! The result is written into each eBPF object's `vnt_filter` global
//! (`ebpf/include/vnt/common.h`), so packets outside the filter are rejected
//! in the kernel before any ring-buffer space is reserved.

use std::net::IpAddr;

use thiserror::Error;

/// Mirror of `VNT_MAX_NETNS`.
pub const MAX_NETNS: usize = 8;

/// Flag bits, mirror of `VNT_F_*`.
mod flag {
    pub const FAMILY: u32 = 1 << 0;
    pub const PROTO: u32 = 1 << 1;
    pub const HOST: u32 = 1 << 2;
    pub const SRC: u32 = 1 << 3;
    pub const DST: u32 = 1 << 4;
    pub const PORT: u32 = 1 << 5;
    pub const SPORT: u32 = 1 << 6;
    pub const DPORT: u32 = 1 << 7;
    pub const DEV: u32 = 1 << 8;
    pub const NETNS: u32 = 1 << 9;
    pub const EXCLUDE: u32 = 1 << 10;
}

/// Mirror of `VNT_MAX_EXCLUDE`: endpoints whose traffic is left out.
pub const MAX_EXCLUDE: usize = 4;

/// A filter expression that did not parse.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FilterError {
    /// An unknown word where a primitive was expected.
    #[error("unknown filter primitive `{0}`; expected one of: host, src, dst, port, sport, dport, proto, ip, ip6, dev, netns (joined by `and`)")]
    UnknownPrimitive(String),
    /// A primitive without its value.
    #[error("`{0}` needs a value")]
    MissingValue(String),
    /// A value that does not fit its primitive.
    #[error("invalid value `{value}` for `{primitive}`: {reason}")]
    BadValue {
        /// The primitive (`port`).
        primitive: String,
        /// The value given.
        value: String,
        /// Why it is wrong.
        reason: String,
    },
    /// The same primitive twice.
    #[error("`{0}` given twice; a filter is a conjunction and each primitive may appear once")]
    Duplicate(String),
    /// `or`, `not`, parentheses.
    #[error("only `and` is supported between primitives, found `{0}`")]
    Unsupported(String),
    /// Address families that contradict each other.
    #[error("filter mixes IPv4 and IPv6 (`{0}`); no packet can match")]
    MixedFamilies(String),
}

/// An address prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length.
    pub len: u8,
}

/// A parsed filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterSpec {
    /// `ip` (4) or `ip6` (6).
    pub family: Option<u8>,
    /// IP protocol number.
    pub proto: Option<u8>,
    /// Either address in this prefix.
    pub host: Option<Cidr>,
    /// Source address in this prefix.
    pub src: Option<Cidr>,
    /// Destination address in this prefix.
    pub dst: Option<Cidr>,
    /// Either port.
    pub port: Option<u16>,
    /// Source port.
    pub sport: Option<u16>,
    /// Destination port.
    pub dport: Option<u16>,
    /// Interface name.
    pub dev: Option<String>,
    /// Network namespace inodes.
    pub netns: Vec<u32>,
}

fn bad(primitive: &str, value: &str, reason: impl Into<String>) -> FilterError {
    FilterError::BadValue {
        primitive: primitive.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

fn parse_cidr(primitive: &str, v: &str) -> Result<Cidr, FilterError> {
    let (a, l) = match v.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (v, None),
    };
    let addr: IpAddr = a
        .parse()
        .map_err(|_| bad(primitive, v, "not an IPv4 or IPv6 address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match l {
        None => max,
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|&n| n <= max)
            .ok_or_else(|| bad(primitive, v, format!("prefix length must be 0..={max}")))?,
    };
    Ok(Cidr { addr, len })
}

fn parse_port(primitive: &str, v: &str) -> Result<u16, FilterError> {
    v.parse::<u16>()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| bad(primitive, v, "a port is 1..=65535"))
}

fn parse_proto(v: &str) -> Result<u8, FilterError> {
    Ok(match v.to_ascii_lowercase().as_str() {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "icmpv6" | "icmp6" => 58,
        n => n.parse::<u8>().map_err(|_| {
            bad(
                "proto",
                v,
                "expected tcp, udp, icmp, icmpv6 or a protocol number",
            )
        })?,
    })
}

fn set<T>(slot: &mut Option<T>, name: &str, v: T) -> Result<(), FilterError> {
    if slot.is_some() {
        return Err(FilterError::Duplicate(name.into()));
    }
    *slot = Some(v);
    Ok(())
}

impl FilterSpec {
    /// Parse an expression; the empty string matches everything.
    pub fn parse(expr: &str) -> Result<FilterSpec, FilterError> {
        let mut f = FilterSpec::default();
        let mut words = expr.split_whitespace().peekable();
        let mut first = true;
        while let Some(w) = words.next() {
            if !first {
                if w != "and" && w != "&&" {
                    return Err(match w {
                        "or" | "||" | "not" | "!" => FilterError::Unsupported(w.into()),
                        _ => FilterError::Unsupported(format!("{w} (missing `and`?)")),
                    });
                }
                let Some(next) = words.next() else {
                    return Err(FilterError::MissingValue("and".into()));
                };
                f.primitive(next, &mut words)?;
            } else {
                f.primitive(w, &mut words)?;
            }
            first = false;
        }
        f.check_families()?;
        Ok(f)
    }

    fn primitive<'a>(
        &mut self,
        w: &str,
        words: &mut impl Iterator<Item = &'a str>,
    ) -> Result<(), FilterError> {
        if w.starts_with('(') || w == "not" || w == "!" {
            return Err(FilterError::Unsupported(w.into()));
        }
        match w {
            "ip" => return set(&mut self.family, "ip", 4),
            "ip6" => return set(&mut self.family, "ip6", 6),
            _ => {}
        }
        let known = [
            "host", "src", "dst", "port", "sport", "dport", "proto", "dev", "netns",
        ];
        if !known.contains(&w) {
            return Err(FilterError::UnknownPrimitive(w.into()));
        }
        let v = words
            .next()
            .ok_or_else(|| FilterError::MissingValue(w.into()))?;
        match w {
            "host" => set(&mut self.host, w, parse_cidr(w, v)?),
            "src" => set(&mut self.src, w, parse_cidr(w, v)?),
            "dst" => set(&mut self.dst, w, parse_cidr(w, v)?),
            "port" => set(&mut self.port, w, parse_port(w, v)?),
            "sport" => set(&mut self.sport, w, parse_port(w, v)?),
            "dport" => set(&mut self.dport, w, parse_port(w, v)?),
            "proto" => set(&mut self.proto, w, parse_proto(v)?),
            "dev" => {
                if v.is_empty() || v.len() > 15 {
                    return Err(bad(w, v, "interface names are 1..=15 bytes"));
                }
                set(&mut self.dev, w, v.to_string())
            }
            "netns" => {
                if !self.netns.is_empty() {
                    return Err(FilterError::Duplicate(w.into()));
                }
                for part in v.split(',') {
                    let inode = part
                        .parse::<u32>()
                        .map_err(|_| bad(w, v, "expected namespace inode numbers (`stat -L -c %i /run/netns/NAME`), comma-separated"))?;
                    self.netns.push(inode);
                }
                if self.netns.len() > MAX_NETNS {
                    return Err(bad(w, v, format!("at most {MAX_NETNS} namespaces")));
                }
                Ok(())
            }
            _ => unreachable!("checked against `known` above"),
        }
    }

    fn check_families(&mut self) -> Result<(), FilterError> {
        let fams: Vec<u8> = [self.host, self.src, self.dst]
            .iter()
            .flatten()
            .map(|c| if c.addr.is_ipv4() { 4 } else { 6 })
            .chain(self.family)
            .collect();
        if fams.windows(2).any(|w| w[0] != w[1]) {
            return Err(FilterError::MixedFamilies(
                "addresses and ip/ip6 disagree".into(),
            ));
        }
        Ok(())
    }

    /// The in-kernel form, with the sampling divisor.
    pub fn to_kernel(&self, sample_n: u32) -> KernelFilter {
        let mut k = KernelFilter {
            sample_n,
            ..KernelFilter::default()
        };
        if let Some(fam) = self.family {
            k.flags |= flag::FAMILY;
            k.family = fam;
        }
        if let Some(p) = self.proto {
            k.flags |= flag::PROTO;
            k.proto = p;
        }
        for (cidr, bit, slot) in [
            (self.host, flag::HOST, &mut k.host),
            (self.src, flag::SRC, &mut k.src),
            (self.dst, flag::DST, &mut k.dst),
        ] {
            if let Some(c) = cidr {
                k.flags |= bit;
                *slot = KernelCidr::from(c);
            }
        }
        for (port, bit, slot) in [
            (self.port, flag::PORT, &mut k.port),
            (self.sport, flag::SPORT, &mut k.sport),
            (self.dport, flag::DPORT, &mut k.dport),
        ] {
            if let Some(p) = port {
                k.flags |= bit;
                *slot = p;
            }
        }
        if let Some(dev) = &self.dev {
            k.flags |= flag::DEV;
            k.dev[..dev.len()].copy_from_slice(dev.as_bytes());
        }
        if !self.netns.is_empty() {
            k.flags |= flag::NETNS;
            k.netns_count = self.netns.len() as u32;
            k.netns[..self.netns.len()].copy_from_slice(&self.netns);
        }
        k
    }
}

/// Mirror of `struct vnt_cidr`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelCidr {
    addr: [u8; 16],
    family: u8,
    prefix_len: u8,
    _pad: u16,
}

impl From<Cidr> for KernelCidr {
    fn from(c: Cidr) -> KernelCidr {
        let mut addr = [0u8; 16];
        let family = match c.addr {
            IpAddr::V4(a) => {
                addr[..4].copy_from_slice(&a.octets());
                4
            }
            IpAddr::V6(a) => {
                addr.copy_from_slice(&a.octets());
                6
            }
        };
        KernelCidr {
            addr,
            family,
            prefix_len: c.len,
            _pad: 0,
        }
    }
}

/// Mirror of `struct vnt_filter`, written into `.rodata` before load.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelFilter {
    /// Keep packets whose id % sample_n == 0.
    pub sample_n: u32,
    flags: u32,
    family: u8,
    proto: u8,
    port: u16,
    sport: u16,
    dport: u16,
    host: KernelCidr,
    src: KernelCidr,
    dst: KernelCidr,
    dev: [u8; 16],
    netns_count: u32,
    netns: [u32; MAX_NETNS],
    exclude_count: u32,
    exclude: [KernelEndpoint; MAX_EXCLUDE],
}

/// Mirror of `struct vnt_endpoint`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelEndpoint {
    addr: [u8; 16],
    port: u16,
    family: u8,
    _pad: u8,
}

const _: () = assert!(
    std::mem::size_of::<KernelFilter>()
        == 16 + 3 * 20 + 16 + 4 + 4 * MAX_NETNS + 4 + 20 * MAX_EXCLUDE
);
const _: () = assert!(std::mem::size_of::<KernelFilter>() == 212);

impl KernelFilter {
    /// Leave out packets to or from `endpoints` (at most [`MAX_EXCLUDE`];
    /// the rest are ignored and returned).
    pub fn exclude(&mut self, endpoints: &[std::net::SocketAddr]) -> Vec<std::net::SocketAddr> {
        let mut left_over = vec![];
        for ep in endpoints {
            let n = self.exclude_count as usize;
            if n >= MAX_EXCLUDE {
                left_over.push(*ep);
                continue;
            }
            let mut e = KernelEndpoint {
                port: ep.port(),
                ..KernelEndpoint::default()
            };
            match ep.ip() {
                IpAddr::V4(a) => {
                    e.family = 4;
                    e.addr[..4].copy_from_slice(&a.octets());
                }
                IpAddr::V6(a) => {
                    e.family = 6;
                    e.addr = a.octets();
                }
            }
            self.exclude[n] = e;
            self.exclude_count += 1;
            self.flags |= flag::EXCLUDE;
        }
        left_over
    }

    /// The `dev` filter's interface name, when set (TC probes attach there).
    pub fn dev(&self) -> Option<String> {
        if self.flags & flag::DEV == 0 {
            return None;
        }
        let end = self.dev.iter().position(|&b| b == 0).unwrap_or(16);
        Some(String::from_utf8_lossy(&self.dev[..end]).into_owned())
    }

    /// The `netns` filter's namespace inodes (empty: every namespace).
    pub fn netns(&self) -> &[u32] {
        if self.flags & flag::NETNS == 0 {
            return &[];
        }
        &self.netns[..(self.netns_count as usize).min(MAX_NETNS)]
    }
}

// SAFETY: `KernelFilter` is `repr(C)`, `Copy`, made only of integers and
// integer arrays with explicit padding fields, so every byte is initialised.
unsafe impl aya::Pod for KernelFilter {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_matches_everything() {
        let f = FilterSpec::parse("").unwrap();
        assert_eq!(f, FilterSpec::default());
        assert_eq!(f.to_kernel(1).flags, 0);
    }

    #[test]
    fn conjunction_of_every_primitive() {
        let f = FilterSpec::parse(
            "host 10.1.0.0/16 and src 10.1.2.3 and dst 10.1.0.0/24 and port 53 and sport 1000 \
             and dport 2000 and proto udp and ip and dev veth0 and netns 4026531840,4026532000",
        )
        .unwrap();
        assert_eq!(f.port, Some(53));
        assert_eq!(f.proto, Some(17));
        assert_eq!(f.src.unwrap().len, 32);
        assert_eq!(f.netns, vec![4026531840, 4026532000]);
        let k = f.to_kernel(10);
        assert_eq!(k.flags, 0x3ff);
        assert_eq!(&k.dev[..6], b"veth0\0");
        assert_eq!(k.dev().as_deref(), Some("veth0"));
        assert_eq!(k.netns(), &[4026531840, 4026532000]);
        assert_eq!(k.host.addr[..4], [10, 1, 0, 0]);
        assert_eq!(k.host.prefix_len, 16);
        assert_eq!(k.sample_n, 10);
    }

    #[test]
    fn exclusions_fill_up_to_the_limit() {
        let mut k = FilterSpec::default().to_kernel(1);
        let eps: Vec<std::net::SocketAddr> = ["127.0.0.1:4317", "[::1]:4317"]
            .iter()
            .chain(["10.0.0.1:1", "10.0.0.2:2", "10.0.0.3:3"].iter())
            .map(|s| s.parse().unwrap())
            .collect();
        let rest = k.exclude(&eps);
        assert_eq!(rest, vec![eps[4]]);
        assert_eq!(k.flags, flag::EXCLUDE);
        assert_eq!(k.exclude_count, 4);
        assert_eq!(k.exclude[0].addr[..4], [127, 0, 0, 1]);
        assert_eq!((k.exclude[0].port, k.exclude[0].family), (4317, 4));
        assert_eq!((k.exclude[1].addr[15], k.exclude[1].family), (1, 6));
    }

    #[test]
    fn ipv6_prefix() {
        let f = FilterSpec::parse("host fd00::/8 and proto icmpv6").unwrap();
        let k = f.to_kernel(1);
        assert_eq!(k.host.family, 6);
        assert_eq!(k.host.addr[0], 0xfd);
        assert_eq!(k.proto, 58);
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(
            FilterSpec::parse("hots 1.2.3.4"),
            Err(FilterError::UnknownPrimitive("hots".into()))
        );
        assert_eq!(
            FilterSpec::parse("port"),
            Err(FilterError::MissingValue("port".into()))
        );
        assert!(matches!(
            FilterSpec::parse("port 70000"),
            Err(FilterError::BadValue { .. })
        ));
        assert!(matches!(
            FilterSpec::parse("host 10.0.0.0/33"),
            Err(FilterError::BadValue { .. })
        ));
        assert!(matches!(
            FilterSpec::parse("port 1 or port 2"),
            Err(FilterError::Unsupported(_))
        ));
        assert!(matches!(
            FilterSpec::parse("port 1 port 2"),
            Err(FilterError::Unsupported(_))
        ));
        assert_eq!(
            FilterSpec::parse("port 1 and port 2"),
            Err(FilterError::Duplicate("port".into()))
        );
        assert!(matches!(
            FilterSpec::parse("ip6 and host 10.0.0.1"),
            Err(FilterError::MixedFamilies(_))
        ));
        assert!(matches!(
            FilterSpec::parse("netns 1,2,3,4,5,6,7,8,9"),
            Err(FilterError::BadValue { .. })
        ));
        assert!(matches!(
            FilterSpec::parse("dev averyveryverylongname"),
            Err(FilterError::BadValue { .. })
        ));
        assert!(matches!(
            FilterSpec::parse("port 1 and"),
            Err(FilterError::MissingValue(_))
        ));
    }
}
