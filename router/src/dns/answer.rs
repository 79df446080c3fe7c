//! Answering one DNS query from the name table (weaveDNS semantics), with
//! hickory-proto's message types. Pure: the table, the zone and the random
//! source come in, the encoded reply (or "forward it") goes out.
//!
//! - A in the domain: every live address, shuffled per response; names are
//!   case-insensitive; a single-label name is qualified with the domain.
//! - Another type of an existing name: NOERROR, no answer.
//! - An unknown name in the domain: NXDOMAIN, authoritative.
//! - PTR in `in-addr.arpa.` for a registered address: the name; otherwise,
//!   like every name outside the domain, the query is forwarded upstream.
//! - A reply longer than the client accepts (512 bytes, or its EDNS0 size)
//!   drops answers from the end, whole records only, and sets TC.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use rand::Rng;
use rand::seq::SliceRandom;

/// The largest UDP reply we send, whatever EDNS0 size the client offers.
pub const MAX_UDP_REPLY: usize = 4096;
/// A UDP reply's limit for a client without EDNS0 (RFC 1035).
pub const CLASSIC_UDP_REPLY: usize = 512;
/// The largest reply over TCP (the 2-byte length prefix).
pub const MAX_TCP_REPLY: usize = 65_535;

/// The live names, as the server reads them (rebuilt on every change).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Names {
    /// Lowercase FQDN → live addresses.
    pub by_name: HashMap<String, Vec<Ipv4Addr>>,
    /// Address → the first live name registered for it.
    pub by_addr: HashMap<Ipv4Addr, Name>,
}

/// What the server serves.
#[derive(Debug, Clone)]
pub struct Zone {
    /// The domain, lowercase FQDN (`weave.local.`).
    pub domain: Name,
    /// TTL of every answer, in seconds.
    pub ttl: u32,
}

/// What to do with a query.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send these bytes back; the code is for metrics.
    Reply(Vec<u8>, ResponseCode),
    /// Not ours: ask the upstream servers.
    Forward,
}

/// The reply size a client accepts over UDP.
pub fn udp_limit(req: &Message) -> usize {
    usize::from(req.max_payload()).clamp(CLASSIC_UDP_REPLY, MAX_UDP_REPLY)
}

/// How the query came, which bounds the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// 512 bytes, or the client's EDNS0 size (at most [`MAX_UDP_REPLY`]).
    Udp,
    /// [`MAX_TCP_REPLY`].
    Tcp,
}

/// Answers `bytes` (one DNS message) within what `transport` carries.
pub fn answer(
    bytes: &[u8],
    names: &Names,
    zone: &Zone,
    transport: Transport,
    rng: &mut impl Rng,
) -> Outcome {
    let req = match Message::from_vec(bytes) {
        Ok(m) => m,
        Err(_) => return format_error(bytes),
    };
    let limit = match transport {
        Transport::Udp => udp_limit(&req),
        Transport::Tcp => MAX_TCP_REPLY,
    };
    if req.metadata.message_type != MessageType::Query {
        return format_error(bytes);
    }
    if req.metadata.op_code != OpCode::Query {
        return reply(&req, Vec::new(), ResponseCode::NotImp, false, limit);
    }
    let [q] = req.queries.as_slice() else {
        return reply(&req, Vec::new(), ResponseCode::FormErr, false, limit);
    };
    if q.query_class() != DNSClass::IN {
        return Outcome::Forward;
    }
    let asked = q.name();
    let mut lower = asked.to_lowercase();
    lower.set_fqdn(true);
    if lower.num_labels() == 1 {
        match lower.clone().append_domain(&zone.domain) {
            Ok(n) => lower = n,
            Err(_) => return Outcome::Forward,
        }
    }
    if zone.domain.zone_of(&lower) {
        let key = lower.to_ascii();
        let Some(addrs) = names.by_name.get(&key).filter(|a| !a.is_empty()) else {
            return reply(&req, Vec::new(), ResponseCode::NXDomain, true, limit);
        };
        let mut records = Vec::new();
        if matches!(q.query_type(), RecordType::A | RecordType::ANY) {
            let mut addrs = addrs.clone();
            addrs.shuffle(rng);
            records = addrs
                .into_iter()
                .map(|a| Record::from_rdata(asked.clone(), zone.ttl, RData::A(A(a))))
                .collect();
        }
        return reply(&req, records, ResponseCode::NoError, true, limit);
    }
    if q.query_type() == RecordType::PTR
        && let Some(addr) = reverse_v4(&lower)
        && let Some(name) = names.by_addr.get(&addr)
    {
        let rec = Record::from_rdata(asked.clone(), zone.ttl, RData::PTR(PTR(name.clone())));
        return reply(&req, vec![rec], ResponseCode::NoError, true, limit);
    }
    Outcome::Forward
}

/// The address of `d.c.b.a.in-addr.arpa.`, if the name is one.
fn reverse_v4(name: &Name) -> Option<Ipv4Addr> {
    let labels: Vec<&[u8]> = name.iter().collect();
    let [d, c, b, a, inaddr, arpa] = labels.as_slice() else {
        return None;
    };
    if !inaddr.eq_ignore_ascii_case(b"in-addr") || !arpa.eq_ignore_ascii_case(b"arpa") {
        return None;
    }
    let octet = |l: &[u8]| std::str::from_utf8(l).ok()?.parse::<u8>().ok();
    Some(Ipv4Addr::new(octet(a)?, octet(b)?, octet(c)?, octet(d)?))
}

/// A reply to `req` with `answers`, cut to `limit` bytes on a record boundary.
fn reply(
    req: &Message,
    mut answers: Vec<Record>,
    code: ResponseCode,
    authoritative: bool,
    limit: usize,
) -> Outcome {
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.metadata.authoritative = authoritative;
    resp.metadata.response_code = code;
    resp.add_queries(req.queries.iter().cloned());
    if req.edns.is_some() {
        let mut ours = Edns::new();
        ours.set_max_payload(MAX_UDP_REPLY as u16);
        resp.set_edns(ours);
    }
    loop {
        resp.answers = answers.clone();
        let Ok(bytes) = resp.to_vec() else {
            return Outcome::Reply(Vec::new(), ResponseCode::ServFail);
        };
        if bytes.len() <= limit || answers.is_empty() {
            return Outcome::Reply(bytes, code);
        }
        // Each A record is at least 16 bytes: drop enough to fit, then re-check.
        let excess = bytes.len() - limit;
        let drop = excess.div_ceil(16).clamp(1, answers.len());
        answers.truncate(answers.len() - drop);
        resp.metadata.truncation = true;
    }
}

/// FORMERR for a message we cannot parse: the id (and opcode) from its
/// first bytes, when there are enough of them.
fn format_error(bytes: &[u8]) -> Outcome {
    let Some(id) = bytes.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
        return Outcome::Reply(Vec::new(), ResponseCode::FormErr);
    };
    let resp = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
    Outcome::Reply(resp.to_vec().unwrap_or_default(), ResponseCode::FormErr)
}

/// SERVFAIL for `bytes` (when every upstream failed).
pub fn server_failure(bytes: &[u8]) -> Vec<u8> {
    let Ok(req) = Message::from_vec(bytes) else {
        return Vec::new();
    };
    match reply(
        &req,
        Vec::new(),
        ResponseCode::ServFail,
        false,
        MAX_TCP_REPLY,
    ) {
        Outcome::Reply(b, _) => b,
        Outcome::Forward => Vec::new(),
    }
}

/// The query (for tests and the load generator).
pub fn query(name: &str, rtype: RecordType, id: u16) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    if let Ok(n) = Name::from_ascii(name) {
        m.add_query(Query::query(n, rtype));
    }
    m.to_vec().unwrap_or_default()
}

#[cfg(test)]
#[path = "answer_tests.rs"]
mod tests;
