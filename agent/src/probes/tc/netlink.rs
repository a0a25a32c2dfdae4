//! The rtnetlink requests aya does not offer publicly: list the TC filters of
//! one hook (`RTM_GETTFILTER` dump) with their bpf program name and id, delete
//! one filter by its exact priority and handle (`RTM_DELTFILTER`), and follow
//! a namespace's links ([`LinkMonitor`]: `RTNLGRP_LINK` notifications plus an
//! `RTM_GETLINK` dump, each link with its name and `IFLA_INFO_KIND`). Sockets
//! belong to the network namespace of the thread that opens them.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWTFILTER: u16 = 44;
const RTM_DELTFILTER: u16 = 45;
const RTM_GETTFILTER: u16 = 46;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_NAME: u16 = 7;
const TCA_BPF_ID: u16 = 11;
const NLA_TYPE_MASK: u16 = !(1 << 15 | 1 << 14);
const ETH_P_ALL: u16 = 0x0003;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
/// `RTMGRP_LINK`: the multicast group of link notifications (`RTNLGRP_LINK` = 1).
const RTMGRP_LINK: u32 = 1;
const IFINFOMSG_LEN: usize = 16;

const NLMSG_HDR_LEN: usize = 16;
const TCMSG_LEN: usize = 20;

/// One TC filter as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Interface index.
    pub ifindex: i32,
    /// Parent (`TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)` for clsact ingress).
    pub parent: u32,
    /// Priority (`tc filter ... pref`).
    pub priority: u16,
    /// Handle.
    pub handle: u32,
    /// Classifier kind (`bpf`, `matchall`, `u32`, ...).
    pub kind: String,
    /// For `bpf` filters: the program name given at attach time.
    pub bpf_name: Option<String>,
    /// For `bpf` filters: the program id.
    pub bpf_id: Option<u32>,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn nlmsg(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDR_LEN + body.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    m.extend_from_slice(body);
    m
}

fn tcmsg(ifindex: i32, handle: u32, parent: u32, info: u32) -> Vec<u8> {
    let mut t = Vec::with_capacity(TCMSG_LEN);
    t.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    t.extend_from_slice(&ifindex.to_ne_bytes());
    t.extend_from_slice(&handle.to_ne_bytes());
    t.extend_from_slice(&parent.to_ne_bytes());
    t.extend_from_slice(&info.to_ne_bytes());
    t
}

fn rtattr(kind: u16, data: &[u8], out: &mut Vec<u8>) {
    let len = 4 + data.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(data);
    out.resize(align4(out.len()), 0);
}

/// Iterate `(type, payload)` over netlink attributes.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let kind = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = &b[align4(len).min(b.len())..];
        Some((kind, payload))
    })
}

fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// What one received datagram said.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// More messages follow.
    More,
    /// NLMSG_DONE, or an ACK (error 0).
    Done,
}

/// Parse the messages of one datagram, appending filters to `out`.
fn parse(buf: &[u8], out: &mut Vec<Filter>) -> io::Result<Reply> {
    let mut b = buf;
    while b.len() >= NLMSG_HDR_LEN {
        let len = u32_at(b, 0) as usize;
        let kind = u16::from_ne_bytes([b[4], b[5]]);
        if len < NLMSG_HDR_LEN || len > b.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("truncated netlink message ({len} bytes, {} left)", b.len()),
            ));
        }
        let body = &b[NLMSG_HDR_LEN..len];
        match kind {
            NLMSG_DONE => return Ok(Reply::Done),
            NLMSG_ERROR => {
                if body.len() < 4 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "short netlink error message",
                    ));
                }
                let err = u32_at(body, 0) as i32;
                if err == 0 {
                    return Ok(Reply::Done);
                }
                return Err(io::Error::from_raw_os_error(-err));
            }
            RTM_NEWTFILTER if body.len() >= TCMSG_LEN => {
                let info = u32_at(body, 16);
                let mut f = Filter {
                    ifindex: u32_at(body, 4) as i32,
                    handle: u32_at(body, 8),
                    parent: u32_at(body, 12),
                    priority: (info >> 16) as u16,
                    kind: String::new(),
                    bpf_name: None,
                    bpf_id: None,
                };
                for (t, p) in attrs(&body[TCMSG_LEN..]) {
                    match t {
                        TCA_KIND => f.kind = c_string(p),
                        TCA_OPTIONS => {
                            for (t, p) in attrs(p) {
                                match t {
                                    TCA_BPF_NAME => f.bpf_name = Some(c_string(p)),
                                    TCA_BPF_ID if p.len() >= 4 => f.bpf_id = Some(u32_at(p, 0)),
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
                // A dump also lists the chain head of each priority (no handle, no options).
                if f.handle != 0 {
                    out.push(f);
                }
            }
            _ => {}
        }
        b = &b[align4(len).min(b.len())..];
    }
    Ok(Reply::More)
}

/// A link appeared, changed, or went (`RTM_NEWLINK` / `RTM_DELLINK`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A link exists (new, changed, or listed by a dump).
    New {
        /// Interface index.
        ifindex: u32,
        /// Interface name.
        name: String,
        /// `IFLA_INFO_KIND` (`vxlan`, `veth`, ...); `None` for devices without one (`lo`, NICs).
        kind: Option<String>,
    },
    /// The link was deleted.
    Del {
        /// Interface index.
        ifindex: u32,
    },
}

/// Parse the link messages of one datagram; `Done` once a dump ended.
fn parse_links(buf: &[u8], out: &mut Vec<LinkEvent>) -> io::Result<Reply> {
    let mut b = buf;
    let mut reply = Reply::More;
    while b.len() >= NLMSG_HDR_LEN {
        let len = u32_at(b, 0) as usize;
        let kind = u16::from_ne_bytes([b[4], b[5]]);
        if len < NLMSG_HDR_LEN || len > b.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("truncated netlink message ({len} bytes, {} left)", b.len()),
            ));
        }
        let body = &b[NLMSG_HDR_LEN..len];
        match kind {
            NLMSG_DONE => reply = Reply::Done,
            NLMSG_ERROR if body.len() >= 4 && u32_at(body, 0) != 0 => {
                return Err(io::Error::from_raw_os_error(-(u32_at(body, 0) as i32)));
            }
            RTM_NEWLINK | RTM_DELLINK if body.len() >= IFINFOMSG_LEN => {
                let ifindex = u32_at(body, 4);
                if kind == RTM_DELLINK {
                    out.push(LinkEvent::Del { ifindex });
                } else {
                    let mut name = String::new();
                    let mut link_kind = None;
                    for (t, p) in attrs(&body[IFINFOMSG_LEN..]) {
                        match t {
                            IFLA_IFNAME => name = c_string(p),
                            IFLA_LINKINFO => {
                                link_kind = attrs(p)
                                    .find(|(t, _)| *t == IFLA_INFO_KIND)
                                    .map(|(_, p)| c_string(p));
                            }
                            _ => {}
                        }
                    }
                    out.push(LinkEvent::New {
                        ifindex,
                        name,
                        kind: link_kind,
                    });
                }
            }
            _ => {}
        }
        b = &b[align4(len).min(b.len())..];
    }
    Ok(reply)
}

struct Socket(OwnedFd);

impl Socket {
    fn open() -> io::Result<Socket> {
        // SAFETY: socket(2) with constant arguments; the result is checked
        // before it is wrapped, and then owned by exactly one OwnedFd.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
        Ok(Socket(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// A socket that also receives the multicast `groups` (`RTMGRP_*` bits).
    fn subscribed(groups: u32) -> io::Result<Socket> {
        let sock = Socket::open()?;
        // SAFETY: all-zero is a valid sockaddr_nl.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = groups;
        // SAFETY: `addr` is a sockaddr_nl of the size passed; the fd is open.
        let r = unsafe {
            libc::bind(
                sock.0.as_raw_fd(),
                std::ptr::addr_of!(addr).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sock)
    }

    fn send(&self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: all-zero is a valid sockaddr_nl (pid 0: the kernel).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `msg` is valid for its length; `addr` is a sockaddr_nl of
        // the size passed.
        let n = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                std::ptr::addr_of!(addr).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv_flags(buf, 0)
    }

    fn recv_flags(&self, buf: &mut [u8], flags: i32) -> io::Result<usize> {
        loop {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe {
                libc::recv(
                    self.0.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    flags,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Send one request and read replies until DONE or an ACK.
    fn exchange(&self, msg: &[u8]) -> io::Result<Vec<Filter>> {
        self.send(msg)?;
        let mut buf = vec![0u8; 32 * 1024];
        let mut out = Vec::new();
        loop {
            let n = self.recv(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            if parse(&buf[..n], &mut out)? == Reply::Done {
                return Ok(out);
            }
        }
    }
}

/// The links of one network namespace, followed: opened in the calling
/// thread's namespace, it stays bound to that namespace (and keeps it alive:
/// drop it when the namespace has no other user).
pub struct LinkMonitor {
    sock: Socket,
    buf: Vec<u8>,
    seq: u32,
}

impl LinkMonitor {
    /// Subscribe to link notifications, then list the links there are:
    /// subscribing first means no link created meanwhile is missed.
    pub fn open() -> io::Result<(LinkMonitor, Vec<LinkEvent>)> {
        let mut m = LinkMonitor {
            sock: Socket::subscribed(RTMGRP_LINK)?,
            buf: vec![0u8; 64 * 1024],
            seq: 0,
        };
        let links = m.dump()?;
        Ok((m, links))
    }

    /// Every link now, with any notification that arrived meanwhile, in
    /// order (after an overrun, to learn what was missed).
    pub fn dump(&mut self) -> io::Result<Vec<LinkEvent>> {
        self.seq += 1;
        let msg = nlmsg(
            RTM_GETLINK,
            NLM_F_REQUEST | NLM_F_DUMP,
            self.seq,
            &[0u8; IFINFOMSG_LEN],
        );
        self.sock.send(&msg)?;
        let mut out = Vec::new();
        loop {
            let n = self.sock.recv(&mut self.buf)?;
            if n == 0 || parse_links(&self.buf[..n], &mut out)? == Reply::Done {
                return Ok(out);
            }
        }
    }

    /// The notifications waiting, without blocking. An overrun
    /// (`ENOBUFS`: notifications were lost) is returned as an error.
    pub fn drain(&mut self) -> io::Result<Vec<LinkEvent>> {
        let mut out = Vec::new();
        loop {
            match self.sock.recv_flags(&mut self.buf, libc::MSG_DONTWAIT) {
                Ok(0) => return Ok(out),
                Ok(n) => {
                    parse_links(&self.buf[..n], &mut out)?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(out),
                Err(e) => return Err(e),
            }
        }
    }

    /// The socket, to wait on with poll(2).
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.sock.0.as_fd()
    }
}

/// The filters on `ifindex` under `parent`, in the calling thread's network namespace.
pub fn filters(ifindex: i32, parent: u32) -> io::Result<Vec<Filter>> {
    let sock = Socket::open()?;
    let msg = nlmsg(
        RTM_GETTFILTER,
        NLM_F_REQUEST | NLM_F_DUMP,
        1,
        &tcmsg(ifindex, 0, parent, 0),
    );
    let mut all = sock.exchange(&msg)?;
    all.retain(|f| f.ifindex == ifindex && f.parent == parent);
    Ok(all)
}

/// Delete the `bpf` filter with exactly this priority and handle.
pub fn delete(ifindex: i32, parent: u32, priority: u16, handle: u32) -> io::Result<()> {
    let sock = Socket::open()?;
    let info = (u32::from(priority) << 16) | u32::from(ETH_P_ALL.to_be());
    let mut body = tcmsg(ifindex, handle, parent, info);
    rtattr(TCA_KIND, b"bpf\0", &mut body);
    let msg = nlmsg(RTM_DELTFILTER, NLM_F_REQUEST | NLM_F_ACK, 2, &body);
    sock.exchange(&msg).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter_msg(
        handle: u32,
        prio: u16,
        kind: &str,
        name: Option<&str>,
        id: Option<u32>,
    ) -> Vec<u8> {
        let mut body = tcmsg(7, handle, 0xffff_fff2, u32::from(prio) << 16 | 0x0300);
        let mut k = kind.as_bytes().to_vec();
        k.push(0);
        rtattr(TCA_KIND, &k, &mut body);
        let mut opts = Vec::new();
        if let Some(n) = name {
            let mut n = n.as_bytes().to_vec();
            n.push(0);
            rtattr(TCA_BPF_NAME, &n, &mut opts);
        }
        if let Some(id) = id {
            rtattr(TCA_BPF_ID, &id.to_ne_bytes(), &mut opts);
        }
        rtattr(TCA_OPTIONS | 1 << 15, &opts, &mut body);
        nlmsg(RTM_NEWTFILTER, 0, 1, &body)
    }

    #[test]
    fn a_dump_yields_bpf_names_and_ids_and_skips_chain_heads() {
        let mut dgram = filter_msg(0, 49152, "bpf", None, None);
        dgram.extend(filter_msg(1, 49152, "bpf", Some("tcfix_ingress"), Some(42)));
        dgram.extend(filter_msg(1, 10, "matchall", None, None));
        let mut out = vec![];
        assert_eq!(parse(&dgram, &mut out).unwrap(), Reply::More);
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0],
            Filter {
                ifindex: 7,
                parent: 0xffff_fff2,
                priority: 49152,
                handle: 1,
                kind: "bpf".into(),
                bpf_name: Some("tcfix_ingress".into()),
                bpf_id: Some(42),
            }
        );
        assert_eq!((out[1].kind.as_str(), out[1].priority), ("matchall", 10));
        assert_eq!(
            parse(&nlmsg(NLMSG_DONE, 0, 1, &[0; 4]), &mut out).unwrap(),
            Reply::Done
        );
    }

    fn link_msg(kind: u16, ifindex: u32, name: &str, link_kind: Option<&str>) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 1, 0]); // family, pad, type
        body.extend_from_slice(&ifindex.to_ne_bytes());
        body.extend_from_slice(&[0u8; 8]); // flags, change
        let mut n = name.as_bytes().to_vec();
        n.push(0);
        rtattr(IFLA_IFNAME, &n, &mut body);
        if let Some(k) = link_kind {
            let mut info = Vec::new();
            rtattr(IFLA_INFO_KIND, k.as_bytes(), &mut info);
            rtattr(IFLA_LINKINFO | 1 << 15, &info, &mut body);
        }
        nlmsg(kind, 0, 0, &body)
    }

    #[test]
    fn links_come_with_their_name_and_kind() {
        let mut dgram = link_msg(RTM_NEWLINK, 1, "lo", None);
        dgram.extend(link_msg(RTM_NEWLINK, 7, "vx0", Some("vxlan")));
        dgram.extend(link_msg(RTM_DELLINK, 7, "vx0", Some("vxlan")));
        let mut out = vec![];
        assert_eq!(parse_links(&dgram, &mut out).unwrap(), Reply::More);
        assert_eq!(
            out,
            [
                LinkEvent::New {
                    ifindex: 1,
                    name: "lo".into(),
                    kind: None
                },
                LinkEvent::New {
                    ifindex: 7,
                    name: "vx0".into(),
                    kind: Some("vxlan".into())
                },
                LinkEvent::Del { ifindex: 7 },
            ]
        );
        let done = nlmsg(NLMSG_DONE, 0, 1, &[0; 4]);
        assert_eq!(parse_links(&done, &mut out).unwrap(), Reply::Done);
        let mut short = link_msg(RTM_NEWLINK, 1, "lo", None);
        short[0] = 255;
        assert!(parse_links(&short, &mut out).is_err());
    }

    #[test]
    fn errors_and_acks_are_told_apart() {
        let mut out = vec![];
        let ack = nlmsg(NLMSG_ERROR, 0, 2, &[0; 20]);
        assert_eq!(parse(&ack, &mut out).unwrap(), Reply::Done);
        let enoent = nlmsg(NLMSG_ERROR, 0, 2, &(-libc::ENOENT).to_ne_bytes());
        let e = parse(&enoent, &mut out).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        assert!(
            parse(&[16, 0, 0, 0, 1], &mut out).is_ok(),
            "a short tail is ignored"
        );
        let mut bad = nlmsg(RTM_NEWTFILTER, 0, 1, &[0; 20]);
        bad[0] = 200;
        assert!(parse(&bad, &mut out).is_err());
    }
}
