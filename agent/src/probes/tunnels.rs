//! The tunnel ports (config `[tunnels]`): UDP destination ports whose
//! packets are a tunnel's outer packets, identified by their inner packet in
//! the kernel (`vnt_parse_tunnel`, `ebpf/include/vnt/pipeline.h`). Written
//! into each eBPF object's `vnt_tunnels` global (`ebpf/include/vnt/common.h`)
//! before load. Why: docs/adr/018-flannel-tunnels.md.

/// Name of the global in every packet plugin's object.
pub const TUNNELS_GLOBAL: &str = "vnt_tunnels";

/// Ports the kernel side holds (`VNT_MAX_TUNNEL_PORTS`).
pub const MAX_TUNNEL_PORTS: usize = 4;

/// flannel's VXLAN port and IANA's.
pub const DEFAULT_VXLAN_PORTS: [u16; 2] = [8472, 4789];
/// flannel's UDP backend (a bare IP packet as the datagram).
pub const DEFAULT_IP_IN_UDP_PORTS: [u16; 1] = [8285];

/// `enum vnt_encap`.
const ENCAP_VXLAN: u8 = 1;
const ENCAP_UDP: u8 = 2;

/// Mirror of `struct vnt_tunnel_port`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct TunnelPort {
    port: u16,
    encap: u8,
    _pad: u8,
}

/// Mirror of `struct vnt_tunnels`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelTunnels {
    ports: [TunnelPort; MAX_TUNNEL_PORTS],
}

const _: () = assert!(std::mem::size_of::<KernelTunnels>() == 16);

// SAFETY: `KernelTunnels` is `repr(C)`, `Copy`, integers only, no padding
// the compiler adds (the C struct's pad byte is a field here).
unsafe impl aya::Pod for KernelTunnels {}

impl KernelTunnels {
    /// VXLAN ports and ports carrying a bare IP packet, at most
    /// [`MAX_TUNNEL_PORTS`] in all, none 0, none twice.
    pub fn new(vxlan: &[u16], ip_in_udp: &[u16]) -> Result<KernelTunnels, String> {
        let all: Vec<(u16, u8)> = vxlan
            .iter()
            .map(|&p| (p, ENCAP_VXLAN))
            .chain(ip_in_udp.iter().map(|&p| (p, ENCAP_UDP)))
            .collect();
        if all.len() > MAX_TUNNEL_PORTS {
            return Err(format!(
                "{} ports, at most {MAX_TUNNEL_PORTS} in all",
                all.len()
            ));
        }
        let mut k = KernelTunnels::default();
        for (i, &(port, encap)) in all.iter().enumerate() {
            if port == 0 {
                return Err("port 0 is not a tunnel port".into());
            }
            if all[..i].iter().any(|&(p, _)| p == port) {
                return Err(format!("port {port} is given twice"));
            }
            k.ports[i] = TunnelPort {
                port,
                encap,
                _pad: 0,
            };
        }
        Ok(k)
    }
}

impl Default for Tunnels {
    fn default() -> Self {
        Tunnels(
            KernelTunnels::new(&DEFAULT_VXLAN_PORTS, &DEFAULT_IP_IN_UDP_PORTS)
                .expect("the default ports are valid"),
        )
    }
}

/// The validated `[tunnels]` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunnels(pub KernelTunnels);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_c_side() {
        let t = Tunnels::default().0;
        let ports: Vec<(u16, u8)> = t.ports.iter().map(|p| (p.port, p.encap)).collect();
        assert_eq!(ports, [(8472, 1), (4789, 1), (8285, 2), (0, 0)]);
    }

    #[test]
    fn limits_are_enforced() {
        assert!(KernelTunnels::new(&[1, 2, 3], &[4, 5]).is_err());
        assert!(KernelTunnels::new(&[8472], &[8472]).is_err());
        assert!(KernelTunnels::new(&[0], &[]).is_err());
        assert_eq!(
            KernelTunnels::new(&[], &[]).unwrap(),
            KernelTunnels::default()
        );
    }
}
