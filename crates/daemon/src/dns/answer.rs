//! What to do with one query packet: answer it from the zone, forward it, or drop it.
//!
//! Only the header and the first question are decoded (by hand, not with `Message::from_vec`, whose
//! `Vec::with_capacity(count)` would trust the guest's counts); the rest of the packet is never read.

use std::net::IpAddr;

use hickory_proto::op::{Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use super::zone::{parse_reverse_name, Zone};

/// The TTL of the records answered from the zone, in seconds.
pub(crate) const TTL: u32 = 30;

/// The largest answer sent over UDP (queries' EDNS sizes are not read); a larger one goes out truncated
/// (TC set, no answers) so that the client asks again over TCP.
const MAX_UDP_ANSWER: usize = 512;

/// A well-formed, single-question standard query.
#[derive(Debug)]
pub(crate) struct Request {
    header: Header,
    query: Query,
    /// Where the question section ends in the packet (it starts at byte 12).
    question_end: usize,
}

/// What to do with a packet.
#[derive(Debug)]
pub(crate) enum Action {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Not in the zone: send the packet unchanged to the upstreams and relay their answer.
    Forward(Request),
    /// Malformed, or not a query: no reply.
    Drop,
}

/// Decides what to do with `packet`, answering from `zone` where it can. `udp` limits the answer's
/// size to what a client without EDNS takes.
pub(crate) fn decide(packet: &[u8], zone: &Zone, udp: bool) -> Action {
    let mut decoder = BinDecoder::new(packet);
    let Ok(header) = Header::read(&mut decoder) else {
        return Action::Drop;
    };
    if header.message_type() != MessageType::Query {
        return Action::Drop;
    }
    if header.op_code() != OpCode::Query {
        return reply(error(&header, None, ResponseCode::NotImp), udp);
    }
    if header.query_count() != 1 {
        return reply(error(&header, None, ResponseCode::FormErr), udp);
    }
    let Ok(query) = Query::read(&mut decoder) else {
        return Action::Drop;
    };
    let request = Request {
        header,
        query,
        question_end: decoder.index(),
    };
    match local_answer(&request, zone) {
        Some(answers) => reply(response(&request, ResponseCode::NoError, answers), udp),
        None => Action::Forward(request),
    }
}

/// The answer when no upstream answered: SERVFAIL, with the question.
pub(crate) fn servfail(request: &Request) -> Vec<u8> {
    let mut message = error(&request.header, Some(&request.query), ResponseCode::ServFail);
    message.set_authoritative(false);
    message.to_vec().unwrap_or_default()
}

/// Whether `answer` (from an upstream) answers the query `packet` described by `request`: same ID, a
/// response, and the same question (compared without case) if it carries one.
pub(crate) fn answers(request: &Request, packet: &[u8], answer: &[u8]) -> bool {
    if answer.len() < 12 || answer.get(..2) != packet.get(..2) || answer[2] & 0x80 == 0 {
        return false;
    }
    let question_count = u16::from_be_bytes([answer[4], answer[5]]);
    if question_count == 0 {
        return true;
    }
    let question = packet.get(12..request.question_end);
    let echoed = answer.get(12..request.question_end);
    matches!((question, echoed), (Some(q), Some(e)) if q.eq_ignore_ascii_case(e))
}

/// The records the zone gives for `request`, or `None` if the zone does not hold its name (then it is
/// forwarded). `Some(vec![])` is NODATA: the name is ours but has no record of that type.
fn local_answer(request: &Request, zone: &Zone) -> Option<Vec<Record>> {
    let query = &request.query;
    if query.query_class() != DNSClass::IN {
        return None;
    }
    let ascii = query.name().to_lowercase().to_ascii();
    let key = ascii.strip_suffix('.').unwrap_or(&ascii);
    let qtype = query.query_type();
    let owner = query.name().clone();
    if let Some(addrs) = zone.lookup(key) {
        let records = addrs.iter().filter_map(|addr| {
            let rdata = match (addr, qtype) {
                (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(*v4)),
                (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(*v6)),
                _ => return None,
            };
            Some(Record::from_rdata(owner.clone(), TTL, rdata))
        });
        return Some(records.collect());
    }
    let target = zone.reverse(parse_reverse_name(key)?)?;
    if !matches!(qtype, RecordType::PTR | RecordType::ANY) {
        return Some(Vec::new());
    }
    // A zone name that is no valid DNS name (a label over 63 bytes, say) has no PTR to give.
    let records = Name::from_ascii(format!("{target}."))
        .map(|name| Record::from_rdata(owner, TTL, RData::PTR(PTR(name))))
        .into_iter()
        .collect();
    Some(records)
}

/// A response to `request` with `answers`: AA and RA set, RD and CD copied, the question echoed.
fn response(request: &Request, code: ResponseCode, answers: Vec<Record>) -> Message {
    let mut message = error(&request.header, Some(&request.query), code);
    message.set_authoritative(true);
    message.insert_answers(answers);
    message
}

/// A response header for `header`'s query with `code`, RA set, RD and CD copied, and `query` if given.
fn error(header: &Header, query: Option<&Query>, code: ResponseCode) -> Message {
    let mut message = Message::error_msg(header.id(), header.op_code(), code);
    message
        .set_recursion_desired(header.recursion_desired())
        .set_checking_disabled(header.checking_disabled())
        .set_recursion_available(true);
    if let Some(query) = query {
        message.add_query(query.clone());
    }
    message
}

/// `message` encoded, truncated (TC, answers dropped) if too large for UDP; dropped if it cannot be
/// encoded at all.
fn reply(mut message: Message, udp: bool) -> Action {
    match message.to_vec() {
        Ok(bytes) if !udp || bytes.len() <= MAX_UDP_ANSWER => Action::Reply(bytes),
        Ok(_) => {
            message.take_answers();
            message.set_truncated(true);
            message.to_vec().map_or(Action::Drop, Action::Reply)
        }
        Err(_) => Action::Drop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, rtype: RecordType) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(7)
            .add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        m.to_vec().unwrap()
    }

    #[test]
    fn a_large_udp_answer_is_truncated() {
        let mut zone = Zone::new();
        for i in 0..40u16 {
            zone.insert(
                "many",
                IpAddr::V6(std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i)),
            );
        }
        let packet = query("many.", RecordType::AAAA);
        let Action::Reply(bytes) = decide(&packet, &zone, true) else {
            panic!("no reply")
        };
        let m = Message::from_vec(&bytes).unwrap();
        assert!(m.truncated());
        assert!(m.answers().is_empty());
        let Action::Reply(bytes) = decide(&packet, &zone, false) else {
            panic!("no reply")
        };
        assert_eq!(Message::from_vec(&bytes).unwrap().answers().len(), 40);
    }

    #[test]
    fn other_classes_and_names_are_forwarded() {
        let mut zone = Zone::new();
        zone.insert("web", "127.88.0.2".parse().unwrap());
        let mut m = Message::new();
        let mut q = Query::query(Name::from_ascii("web.").unwrap(), RecordType::A);
        q.set_query_class(DNSClass::CH);
        m.add_query(q);
        assert!(matches!(
            decide(&m.to_vec().unwrap(), &zone, true),
            Action::Forward(_)
        ));
        let unknown_ptr = query("9.0.88.127.in-addr.arpa.", RecordType::PTR);
        assert!(matches!(decide(&unknown_ptr, &zone, true), Action::Forward(_)));
    }

    #[test]
    fn a_reverse_name_of_ours_asked_for_another_type_is_nodata() {
        let mut zone = Zone::new();
        zone.insert("web", "127.88.0.2".parse().unwrap());
        let packet = query("2.0.88.127.in-addr.arpa.", RecordType::TXT);
        let Action::Reply(bytes) = decide(&packet, &zone, true) else {
            panic!("no reply")
        };
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert!(m.answers().is_empty());
    }

    #[test]
    fn upstream_answers_must_match_the_query() {
        let zone = Zone::new();
        let packet = query("example.test.", RecordType::A);
        let Action::Forward(request) = decide(&packet, &zone, true) else {
            panic!("not forwarded")
        };
        let mut answer = Message::new();
        answer
            .set_id(7)
            .set_message_type(MessageType::Response)
            .add_query(Query::query(
                Name::from_ascii("EXAMPLE.test.").unwrap(),
                RecordType::A,
            ));
        let good = answer.to_vec().unwrap();
        assert!(answers(&request, &packet, &good));
        answer.set_id(8);
        assert!(!answers(&request, &packet, &answer.to_vec().unwrap()));
        answer.set_id(7).set_message_type(MessageType::Query);
        assert!(!answers(&request, &packet, &answer.to_vec().unwrap()));
        assert!(!answers(&request, &packet, &good[..good.len() - 5]));
        assert!(!answers(&request, &packet, &good[..11]));
    }
}
