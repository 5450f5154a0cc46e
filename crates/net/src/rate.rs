//! Bandwidth limits: a token bucket filter (tbf) qdisc on a link, by netlink. An instance's limit is two
//! of them: on the host end of its veth (what it receives) and on its interface inside (what it sends).

use std::io;

use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage, TcOption};
use netlink_packet_route::RouteNetlinkMessage;

use crate::netlink::Netlink;

const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;
const TC_LINKLAYER_ETHERNET: u8 = 1;

/// The bucket: 10 ms of traffic, at least 32 KiB (a few full-size packets, and what the kernel needs to
/// send a TSO burst without stalling).
pub fn burst_bytes(bits_per_second: u64) -> u32 {
    (bits_per_second / 8 / 100).clamp(32 << 10, u32::MAX as u64) as u32
}

/// struct tc_tbf_qopt: rate and peak rate (struct tc_ratespec, 12 bytes each), limit, buffer, mtu.
fn qopt(bytes_per_second: u64, limit: u32, burst: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(36);
    // rate: cell_log, linklayer, overhead, cell_align, mpu, rate (bytes/s; RATE64 carries larger ones).
    v.push(0);
    v.push(TC_LINKLAYER_ETHERNET);
    v.extend_from_slice(&0u16.to_ne_bytes());
    v.extend_from_slice(&0i16.to_ne_bytes());
    v.extend_from_slice(&0u16.to_ne_bytes());
    v.extend_from_slice(&(bytes_per_second.min(u32::MAX as u64) as u32).to_ne_bytes());
    v.extend_from_slice(&[0u8; 12]); // no peak rate
    v.extend_from_slice(&limit.to_ne_bytes());
    // buffer in scheduler ticks; TCA_TBF_BURST below gives it in bytes, which the kernel prefers.
    v.extend_from_slice(&burst.to_ne_bytes());
    v.extend_from_slice(&0u32.to_ne_bytes());
    v
}

/// Limits what `index` sends to `bits_per_second` (replacing its root qdisc).
pub fn limit(nl: &mut Netlink, index: u32, bits_per_second: u64) -> io::Result<()> {
    let bytes = (bits_per_second / 8).max(1);
    let burst = burst_bytes(bits_per_second);
    // Queue up to 50 ms of traffic beyond the bucket before dropping.
    let limit = (bytes / 20).clamp(u64::from(burst), u32::MAX as u64) as u32 + burst;
    let mut msg = TcMessage::default();
    msg.header.index = index as i32;
    msg.header.handle = TcHandle { major: 1, minor: 0 };
    msg.header.parent = TcHandle::ROOT;
    msg.attributes.push(TcAttribute::Kind("tbf".into()));
    msg.attributes.push(TcAttribute::Options(vec![
        TcOption::Other(DefaultNla::new(TCA_TBF_PARMS, qopt(bytes, limit, burst))),
        TcOption::Other(DefaultNla::new(TCA_TBF_RATE64, bytes.to_ne_bytes().to_vec())),
        TcOption::Other(DefaultNla::new(TCA_TBF_BURST, burst.to_ne_bytes().to_vec())),
    ]));
    nl.request(
        RouteNetlinkMessage::NewQueueDiscipline(msg),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
}
