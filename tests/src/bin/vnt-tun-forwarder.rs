//! flannel's UDP backend in miniature: attach to a TUN device, send every
//! packet read from it as the payload of a UDP datagram from `LOCAL:8285` to
//! `PEER:8285`, and write every datagram received on `LOCAL:8285` into the
//! TUN device. Runs until killed.
//!
//!     vnt-tun-forwarder DEVICE LOCAL_ADDR PEER_ADDR
//!
//! Run it in the namespace that holds the device (`ip netns exec`).

use anyhow::{bail, Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

/// flannel's UDP backend port.
const PORT: u16 = 8285;

const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn attach(dev: &str) -> Result<File> {
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .context("failed to open /dev/net/tun")?;
    if dev.len() >= libc::IFNAMSIZ {
        bail!("device name {dev} too long");
    }
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TUN | IFF_NO_PI,
        _pad: [0; 22],
    };
    req.name[..dev.len()].copy_from_slice(dev.as_bytes());
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `IfReq`
    // matches in size (40 bytes) and layout (name, then the flags); the
    // pointer is valid for the call.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("TUNSETIFF {dev} failed"));
    }
    Ok(tun)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dev, local, peer] = &args[..] else {
        bail!("usage: vnt-tun-forwarder DEVICE LOCAL_ADDR PEER_ADDR");
    };
    let local: Ipv4Addr = local.parse().context("LOCAL_ADDR")?;
    let peer = SocketAddr::from((peer.parse::<Ipv4Addr>().context("PEER_ADDR")?, PORT));
    let mut tun = attach(dev)?;
    let mut tun_out = tun.try_clone()?;
    let sock = UdpSocket::bind((local, PORT)).context("bind")?;
    let sock_out = sock.try_clone()?;
    println!("ready");
    std::thread::spawn(move || -> Result<()> {
        let mut buf = vec![0u8; 65536];
        loop {
            let n = tun.read(&mut buf)?;
            sock_out.send_to(&buf[..n], peer)?;
        }
    });
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, _) = sock.recv_from(&mut buf)?;
        // A packet the TUN device refuses is dropped, as flannel would.
        let _ = tun_out.write(&buf[..n]);
    }
}
