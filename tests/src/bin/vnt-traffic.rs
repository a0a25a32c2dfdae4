//! vnt-traffic: paced, countable UDP and TCP traffic for scenarios. Run it in
//! a namespace with `ip netns exec`.
//!
//! ```text
//! vnt-traffic udp-send --dst ADDR --port P --count N --rate PPS --size BYTES [--sport S]
//! vnt-traffic udp-recv --bind ADDR --port P --count N --timeout SECS
//! vnt-traffic tcp-send --dst ADDR --port P --bytes B --chunk C --rate CHUNKS_PER_SEC
//! vnt-traffic tcp-recv --bind ADDR --port P
//! vnt-traffic raw-send --dev IFNAME --frames HEX[,HEX...] [--gap-us US]
//! ```
//!
//! `raw-send` writes each hex-encoded Ethernet frame as it is to `IFNAME`
//! through an `AF_PACKET` socket: crafted (truncated, fragmented, padded)
//! packets the kernel's own stack would never build.
//!
//! Every datagram starts with its big-endian u64 sequence number, so no two
//! are alike. The UDP socket is connected, so IPv4 datagrams also get
//! distinct IP identifiers. A rate of 0 means as fast as possible.
//! Receivers print `listening <addr>` on stderr once bound, and their count
//! (datagrams or bytes) on stdout when done. Senders print what they sent.

use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket,
};
use std::time::{Duration, Instant};

const USAGE: &str = "usage:
  vnt-traffic udp-send --dst ADDR --port P --count N --rate PPS --size BYTES [--sport S]
  vnt-traffic udp-recv --bind ADDR --port P --count N --timeout SECS
  vnt-traffic tcp-send --dst ADDR --port P --bytes B --chunk C --rate CHUNKS_PER_SEC
  vnt-traffic tcp-recv --bind ADDR --port P
  vnt-traffic raw-send --dev IFNAME --frames HEX[,HEX...] [--gap-us US]";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        bail!("{USAGE}");
    };
    let opts = Options::parse(rest)?;
    match command.as_str() {
        "udp-send" => udp_send(&opts),
        "udp-recv" => udp_recv(&opts),
        "tcp-send" => tcp_send(&opts),
        "tcp-recv" => tcp_recv(&opts),
        "raw-send" => raw_send(&opts),
        other => bail!("unknown command `{other}`\n{USAGE}"),
    }
}

/// `--key value` pairs.
struct Options(HashMap<String, String>);

impl Options {
    fn parse(args: &[String]) -> Result<Options> {
        let mut map = HashMap::new();
        let mut it = args.iter();
        while let Some(key) = it.next() {
            let Some(name) = key.strip_prefix("--") else {
                bail!("unexpected argument `{key}`\n{USAGE}");
            };
            let value = it
                .next()
                .with_context(|| format!("`{key}` needs a value\n{USAGE}"))?;
            map.insert(name.to_owned(), value.clone());
        }
        Ok(Options(map))
    }

    fn get<T: std::str::FromStr>(&self, name: &str) -> Result<T>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        let raw = self
            .0
            .get(name)
            .with_context(|| format!("missing --{name}\n{USAGE}"))?;
        raw.parse()
            .with_context(|| format!("bad value for --{name}: `{raw}`"))
    }

    fn get_or<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        if self.0.contains_key(name) {
            self.get(name)
        } else {
            Ok(default)
        }
    }
}

/// Sleeps until the `i`-th event of a paced sequence is due.
struct Pacer {
    start: Instant,
    interval: Option<Duration>,
}

impl Pacer {
    fn new(per_second: u64) -> Pacer {
        Pacer {
            start: Instant::now(),
            interval: (per_second > 0).then(|| Duration::from_nanos(1_000_000_000 / per_second)),
        }
    }

    fn wait_for(&self, i: u64) {
        if let Some(interval) = self.interval {
            let due = self.start + Duration::from_nanos(interval.as_nanos() as u64 * i);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
    }
}

fn unspecified_like(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

fn udp_send(o: &Options) -> Result<()> {
    let dst: IpAddr = o.get("dst")?;
    let port: u16 = o.get("port")?;
    let count: u64 = o.get("count")?;
    let rate: u64 = o.get("rate")?;
    let size: usize = o.get("size")?;
    let sport: u16 = o.get_or("sport", 0)?;
    if size < 8 {
        bail!("--size must be at least 8 (the sequence number)");
    }
    let socket = UdpSocket::bind(SocketAddr::new(unspecified_like(dst), sport))
        .with_context(|| format!("failed to bind UDP source port {sport}"))?;
    let target = SocketAddr::new(dst, port);
    socket
        .connect(target)
        .with_context(|| format!("failed to connect UDP socket to {target}"))?;
    let mut payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let pacer = Pacer::new(rate);
    for seq in 0..count {
        pacer.wait_for(seq);
        payload[..8].copy_from_slice(&seq.to_be_bytes());
        loop {
            match socket.send(&payload) {
                Ok(_) => break,
                // A full socket buffer or device queue: let it drain.
                Err(e)
                    if e.kind() == ErrorKind::WouldBlock
                        || e.raw_os_error() == Some(libc_enobufs()) =>
                {
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("failed to send datagram {seq} to {target}"))
                }
            }
        }
    }
    println!("sent {count}");
    Ok(())
}

/// ENOBUFS on Linux (std has no name for it and this binary has no libc).
const fn libc_enobufs() -> i32 {
    105
}

fn udp_recv(o: &Options) -> Result<()> {
    let bind: IpAddr = o.get("bind")?;
    let port: u16 = o.get("port")?;
    let count: u64 = o.get("count")?;
    let timeout: u64 = o.get("timeout")?;
    let addr = SocketAddr::new(bind, port);
    let socket = UdpSocket::bind(addr).with_context(|| format!("failed to bind {addr}"))?;
    eprintln!("listening {addr}");
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let mut buf = vec![0u8; 65536];
    let mut received = 0u64;
    while received < count {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        socket.set_read_timeout(Some(deadline - now))?;
        match socket.recv(&mut buf) {
            Ok(_) => received += 1,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("recv failed"),
        }
    }
    println!("{received}");
    Ok(())
}

fn tcp_send(o: &Options) -> Result<()> {
    let dst: IpAddr = o.get("dst")?;
    let port: u16 = o.get("port")?;
    let bytes: u64 = o.get("bytes")?;
    let chunk: usize = o.get("chunk")?;
    let rate: u64 = o.get("rate")?;
    if chunk == 0 {
        bail!("--chunk must be positive");
    }
    let target = SocketAddr::new(dst, port);
    let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(10))
        .with_context(|| format!("failed to connect to {target}"))?;
    let data: Vec<u8> = (0..chunk).map(|i| (i % 251) as u8).collect();
    let pacer = Pacer::new(rate);
    let mut sent = 0u64;
    let mut i = 0u64;
    while sent < bytes {
        pacer.wait_for(i);
        let n = chunk.min((bytes - sent) as usize);
        stream
            .write_all(&data[..n])
            .with_context(|| format!("failed to write to {target} after {sent} bytes"))?;
        sent += n as u64;
        i += 1;
    }
    // Close our side, then wait for the receiver to close after reading it all.
    stream.shutdown(Shutdown::Write)?;
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .context("failed waiting for the receiver to close")?;
    println!("sent {sent}");
    Ok(())
}

fn tcp_recv(o: &Options) -> Result<()> {
    let bind: IpAddr = o.get("bind")?;
    let port: u16 = o.get("port")?;
    let addr = SocketAddr::new(bind, port);
    let listener =
        TcpListener::bind(addr).with_context(|| format!("failed to listen on {addr}"))?;
    eprintln!("listening {addr}");
    let (mut stream, peer) = listener.accept().context("accept failed")?;
    let mut buf = vec![0u8; 65536];
    let mut total = 0u64;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("read from {peer} failed after {total} bytes"))
            }
        }
    }
    drop(stream);
    println!("{total}");
    Ok(())
}

fn parse_hex(s: &str) -> Result<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        bail!("odd number of hex digits in `{s}`");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).with_context(|| format!("bad hex `{s}`")))
        .collect()
}

/// Sends raw Ethernet frames out of one interface with an `AF_PACKET` socket.
fn raw_send(o: &Options) -> Result<()> {
    let dev: String = o.get("dev")?;
    let frames: String = o.get("frames")?;
    let gap = Duration::from_micros(o.get_or("gap-us", 1000u64)?);
    let frames = frames
        .split(',')
        .filter(|f| !f.is_empty())
        .map(parse_hex)
        .collect::<Result<Vec<_>>>()?;
    let name = std::ffi::CString::new(dev.clone())?;
    // SAFETY: `name` is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        bail!("no interface `{dev}`: {}", std::io::Error::last_os_error());
    }
    // SAFETY: plain socket(2) call; the fd is checked and closed below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        bail!("socket(AF_PACKET): {}", std::io::Error::last_os_error());
    }
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    let mut result = Ok(());
    for (i, frame) in frames.iter().enumerate() {
        addr.sll_addr[..6].copy_from_slice(&frame[..6.min(frame.len())]);
        // SAFETY: `frame` and `addr` are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            result = Err(anyhow::anyhow!(
                "sendto frame {i} ({} bytes) on {dev}: {}",
                frame.len(),
                std::io::Error::last_os_error()
            ));
            break;
        }
        std::thread::sleep(gap);
    }
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    result?;
    println!("sent {}", frames.len());
    Ok(())
}
