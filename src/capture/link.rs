//! Link layers: from a captured frame to the IP packet inside it.

/// LINKTYPE_ values read here (tcpdump.org/linktypes.html).
pub mod linktype {
    /// BSD loopback: a 4-byte address family in the capturing host's order.
    pub const NULL: u16 = 0;
    pub const ETHERNET: u16 = 1;
    /// Raw IP as some systems number it in pcap files.
    pub const RAW_12: u16 = 12;
    pub const RAW_14: u16 = 14;
    pub const RAW: u16 = 101;
    /// OpenBSD loopback: a 4-byte address family in network order.
    pub const LOOP: u16 = 108;
    pub const LINUX_SLL: u16 = 113;
    pub const IPV4: u16 = 228;
    pub const IPV6: u16 = 229;
    pub const LINUX_SLL2: u16 = 276;
}

/// A link type's name, for the summary.
pub fn name(link_type: u16) -> String {
    use linktype::*;
    match link_type {
        NULL => "BSD loopback".into(),
        ETHERNET => "Ethernet".into(),
        RAW | RAW_12 | RAW_14 => "raw IP".into(),
        LOOP => "OpenBSD loopback".into(),
        LINUX_SLL => "Linux cooked (SLL)".into(),
        LINUX_SLL2 => "Linux cooked v2 (SLL2)".into(),
        IPV4 => "raw IPv4".into(),
        IPV6 => "raw IPv6".into(),
        other => format!("link type {other}"),
    }
}

/// True for the link types this reader understands.
pub fn supported(link_type: u16) -> bool {
    use linktype::*;
    matches!(
        link_type,
        NULL | ETHERNET | RAW | RAW_12 | RAW_14 | LOOP | LINUX_SLL | LINUX_SLL2 | IPV4 | IPV6
    )
}

/// What a frame carries.
#[derive(Debug, PartialEq, Eq)]
pub enum Network<'a> {
    /// An IPv4 or IPv6 packet (the version is in its first nibble).
    Ip(&'a [u8]),
    /// Something else (ARP, LLDP, a non-IP protocol).
    NotIp,
    /// The frame is shorter than its link header.
    Short,
    /// A link type this reader does not decode.
    Unsupported,
}

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
/// 802.1Q, 802.1ad (QinQ outer) and the older QinQ value.
const ETH_VLAN: [u16; 3] = [0x8100, 0x88a8, 0x9100];
/// VLAN tags followed at most (QinQ is two; a few more are tolerated).
const MAX_VLAN_TAGS: usize = 4;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The IP packet in a frame of this link type.
pub fn network(link_type: u16, frame: &[u8]) -> Network<'_> {
    use linktype::*;
    match link_type {
        ETHERNET => match be16(frame, 12) {
            Some(et) => by_ethertype(et, &frame[14.min(frame.len())..], frame.len() >= 14),
            None => Network::Short,
        },
        LINUX_SLL => match be16(frame, 14) {
            Some(et) if frame.len() >= 16 => by_ethertype(et, &frame[16..], true),
            _ => Network::Short,
        },
        LINUX_SLL2 => match be16(frame, 0) {
            Some(et) if frame.len() >= 20 => by_ethertype(et, &frame[20..], true),
            _ => Network::Short,
        },
        RAW | RAW_12 | RAW_14 | IPV4 | IPV6 => by_version(frame),
        NULL | LOOP => {
            if frame.len() < 4 {
                return Network::Short;
            }
            let fam = [frame[0], frame[1], frame[2], frame[3]];
            // NULL is in the capturing host's byte order, LOOP in network
            // order; a family is small, so whichever reading is small is it.
            let v = if link_type == LOOP {
                u32::from_be_bytes(fam)
            } else {
                let le = u32::from_le_bytes(fam);
                if le > 0xffff {
                    u32::from_be_bytes(fam)
                } else {
                    le
                }
            };
            match v {
                // AF_INET everywhere; AF_INET6 on BSDs, macOS and Linux.
                2 | 10 | 24 | 28 | 30 => by_version(&frame[4..]),
                _ => Network::NotIp,
            }
        }
        _ => Network::Unsupported,
    }
}

/// Follow VLAN tags to the payload's ethertype.
fn by_ethertype(mut et: u16, mut rest: &[u8], long_enough: bool) -> Network<'_> {
    if !long_enough {
        return Network::Short;
    }
    let mut tags = 0;
    while ETH_VLAN.contains(&et) {
        tags += 1;
        if tags > MAX_VLAN_TAGS {
            return Network::NotIp;
        }
        // Tag control (2 bytes), then the next ethertype.
        match be16(rest, 2) {
            Some(next) => {
                et = next;
                rest = &rest[4..];
            }
            None => return Network::Short,
        }
    }
    match et {
        ETH_IPV4 | ETH_IPV6 => by_version(rest),
        _ => Network::NotIp,
    }
}

fn by_version(p: &[u8]) -> Network<'_> {
    match p.first().map(|b| b >> 4) {
        Some(4 | 6) => Network::Ip(p),
        Some(_) => Network::NotIp,
        None => Network::Short,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ethernet_with_two_vlan_tags() {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x88, 0xa8, 0x00, 0x0a, 0x81, 0x00, 0x00, 0x14, 0x08, 0x00]);
        f.extend_from_slice(&[0x45, 1, 2, 3]);
        assert_eq!(network(1, &f), Network::Ip(&[0x45, 1, 2, 3]));
    }

    #[test]
    fn null_loopback_either_order() {
        assert_eq!(network(0, &[2, 0, 0, 0, 0x45]), Network::Ip(&[0x45]));
        assert_eq!(network(0, &[0, 0, 0, 30, 0x60]), Network::Ip(&[0x60]));
        assert_eq!(network(108, &[0, 0, 0, 2, 0x45]), Network::Ip(&[0x45]));
    }

    #[test]
    fn short_and_odd_frames_never_panic() {
        for lt in [0u16, 1, 12, 14, 101, 108, 113, 228, 229, 276, 999] {
            for n in 0..40 {
                let f = vec![0x81u8; n];
                let _ = network(lt, &f);
            }
        }
    }
}
