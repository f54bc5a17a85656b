//! Answers from the record table, as one namespace's server gives them: the DNS
//! messages (hickory-proto), and `Ctx`, which forwards what the table does not know.
//! The sockets that carry them are `server` (TCP, start) and `udp`.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use hickory_proto::{
    op::{emit_message_parts, Message, MessageType, Metadata, OpCode, Query, ResponseCode},
    rr::{
        rdata::{A, AAAA, PTR},
        Name, RData, Record, RecordType,
    },
    serialize::binary::BinEncoder,
};
use tokio::sync::Semaphore;

use super::{
    forward::{self, Upstreams},
    records::{Addrs, Families, Lookup, Table},
    Shared,
};

/// Docker's TTL for container names.
const TTL: u32 = 600;
/// Forwarded queries in flight per namespace; more get SERVFAIL at once rather than
/// queueing behind a slow upstream.
const MAX_IN_FLIGHT: usize = 128;

/// What to do with one query.
#[derive(Debug)]
pub enum Reply {
    Answer(Vec<u8>),
    /// Not a local name: forward (the client may), or refuse.
    Forward,
}

/// The header of the answer to `q`.
fn response_metadata(q: &Metadata, code: ResponseCode) -> Metadata {
    let mut m = Metadata::new(q.id, MessageType::Response, q.op_code);
    m.recursion_desired = q.recursion_desired;
    m.recursion_available = true;
    m.response_code = code;
    m
}

fn response(q: &Message, code: ResponseCode) -> Message {
    let mut m = Message::response(q.metadata.id, q.metadata.op_code);
    m.metadata = response_metadata(&q.metadata, code);
    m.queries = q.queries.clone();
    m
}

fn encode(m: &Message) -> Vec<u8> {
    m.to_vec().unwrap_or_default()
}

/// Encodes a message of `queries` and `answers` (and nothing else, as `encode` of the
/// same `Message` would) into `out`, reused from query to query; empty if it cannot.
fn encode_into(out: &mut Vec<u8>, meta: &Metadata, queries: &[Query], answers: &[Record]) {
    out.clear();
    let mut enc = BinEncoder::new(out);
    let done = emit_message_parts(
        meta,
        &mut queries.iter(),
        &mut answers.iter(),
        &mut std::iter::empty::<&Record>(),
        &mut std::iter::empty::<&Record>(),
        None,
        None,
        &mut enc,
    );
    if done.is_err() {
        out.clear();
    }
}

/// The IPv4 address of an in-addr.arpa name.
fn arpa_v4(name: &Name) -> Option<Ipv4Addr> {
    let s = name.to_ascii().to_ascii_lowercase();
    let rest = s.trim_end_matches('.').strip_suffix(".in-addr.arpa")?;
    let mut o: Vec<u8> = rest
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    if o.len() != 4 {
        return None;
    }
    o.reverse();
    Some(Ipv4Addr::new(o[0], o[1], o[2], o[3]))
}

/// The IPv6 address of an ip6.arpa name: 32 nibbles, least significant first.
fn arpa_v6(name: &Name) -> Option<Ipv6Addr> {
    let s = name.to_ascii().to_ascii_lowercase();
    let rest = s.trim_end_matches('.').strip_suffix(".ip6.arpa")?;
    let mut addr = 0u128;
    let mut n = 0;
    for (i, nibble) in rest.split('.').enumerate() {
        // One hex digit a label: "a" is a nibble, "0a" or "" is not.
        let &[c] = nibble.as_bytes() else {
            return None;
        };
        let v = char::from(c).to_digit(16)?;
        addr |= u128::from(v) << (4 * i);
        n = i + 1;
    }
    (n == 32).then(|| Ipv6Addr::from(addr))
}

/// The address a reverse (PTR) name stands for, of either family.
fn arpa(name: &Name) -> Option<IpAddr> {
    arpa_v4(name)
        .map(IpAddr::V4)
        .or_else(|| arpa_v6(name).map(IpAddr::V6))
}

/// Answers `query` from the table as namespace `ns` sees it. Several addresses come
/// shuffled, so clients that take the first one spread over them. Over UDP an answer
/// larger than the client takes (512 bytes without EDNS) comes truncated (TC): the
/// client asks again over TCP.
pub fn answer(table: &Table, ns: &str, query: &[u8], shuffle_seed: u64, udp: bool) -> Reply {
    let mut out = Vec::new();
    match answer_into(table, ns, query, shuffle_seed, udp, &mut out) {
        Handled::Answered => Reply::Answer(out),
        Handled::Forward => Reply::Forward,
    }
}

/// What `answer_into` did with a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handled {
    /// The answer (empty: none to send) is in the caller's buffer.
    Answered,
    /// Not a local name: forward (the client may), or refuse.
    Forward,
}

/// `answer`, writing into `out` (cleared first) so that a server reuses one buffer.
pub fn answer_into(
    table: &Table,
    ns: &str,
    query: &[u8],
    shuffle_seed: u64,
    udp: bool,
    out: &mut Vec<u8>,
) -> Handled {
    out.clear();
    let q = match Message::from_vec(query) {
        Ok(q) if q.metadata.message_type == MessageType::Query => q,
        _ => {
            // Unparseable: FORMERR with the id, when there is one.
            if query.len() >= 2 {
                let id = u16::from_be_bytes([query[0], query[1]]);
                let mut m = Metadata::new(id, MessageType::Response, OpCode::Query);
                m.response_code = ResponseCode::FormErr;
                encode_into(out, &m, &[], &[]);
            }
            return Handled::Answered;
        }
    };
    let Some(question) = q.queries.first() else {
        let m = response_metadata(&q.metadata, ResponseCode::FormErr);
        encode_into(out, &m, &q.queries, &[]);
        return Handled::Answered;
    };
    if q.metadata.op_code != OpCode::Query || q.queries.len() != 1 {
        let m = response_metadata(&q.metadata, ResponseCode::NotImp);
        encode_into(out, &m, &q.queries, &[]);
        return Handled::Answered;
    }
    let name = question.name();
    if question.query_type() == RecordType::PTR {
        if let Some(ip) = arpa(name) {
            if let Some(target) = table.reverse(ns, ip) {
                let m = response_metadata(&q.metadata, ResponseCode::NoError);
                let ptr = Name::from_ascii(format!("{target}."))
                    .ok()
                    .map(|t| Record::from_rdata(name.clone(), TTL, RData::PTR(PTR(t))));
                encode_into(out, &m, &q.queries, ptr.as_slice());
                return Handled::Answered;
            }
        }
        return Handled::Forward;
    }
    let want = match question.query_type() {
        RecordType::A => Families::V4,
        RecordType::AAAA => Families::V6,
        RecordType::ANY => Families::BOTH,
        _ => Families::NONE,
    };
    match table.lookup(ns, &name.to_ascii(), want) {
        Lookup::Unknown => Handled::Forward,
        Lookup::Found(ips) => {
            found_into(&q, name, ips, shuffle_seed, udp, out);
            Handled::Answered
        }
    }
}

/// The answer for a name that exists: NOERROR with its addresses of the families asked,
/// empty for types it has no record of (an IPv4-only container's AAAA, as Docker);
/// over UDP past the client's payload size, the header with TC and the question only.
fn found_into(q: &Message, name: &Name, mut ips: Addrs, seed: u64, udp: bool, out: &mut Vec<u8>) {
    let mut m = response_metadata(&q.metadata, ResponseCode::NoError);
    m.authoritative = true;
    let mut answers = Vec::new();
    shuffle(&mut ips.v4, seed);
    shuffle(&mut ips.v6, seed);
    answers.extend(
        ips.v4
            .into_iter()
            .map(|ip| Record::from_rdata(name.clone(), TTL, RData::A(A(ip)))),
    );
    answers.extend(
        ips.v6
            .into_iter()
            .map(|ip| Record::from_rdata(name.clone(), TTL, RData::AAAA(AAAA(ip)))),
    );
    encode_into(out, &m, &q.queries, &answers);
    if udp && out.len() > usize::from(q.max_payload()) {
        // What Message::truncate keeps: the header with TC, and the question.
        m.truncation = true;
        encode_into(out, &m, &q.queries, &[]);
    }
}

/// Fisher-Yates with a xorshift: enough to spread clients, no need to be unpredictable.
fn shuffle<T>(v: &mut [T], mut seed: u64) {
    for i in (1..v.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

fn refuse(query: &[u8]) -> Vec<u8> {
    match Message::from_vec(query) {
        Ok(q) => encode(&response(&q, ResponseCode::Refused)),
        Err(_) => Vec::new(),
    }
}

fn servfail(query: &[u8]) -> Vec<u8> {
    match Message::from_vec(query) {
        Ok(q) => encode(&response(&q, ResponseCode::ServFail)),
        Err(_) => Vec::new(),
    }
}

/// Per-namespace context of the serving tasks.
pub(super) struct Ctx {
    pub(super) ns: String,
    pub(super) shared: Arc<Shared>,
    /// The client's `--dns` servers and the socket in its namespace that asks them.
    own: Option<(Upstreams, forward::Forwarder)>,
    in_flight: Semaphore,
}

impl Ctx {
    pub(super) fn new(
        ns: &str,
        shared: Arc<Shared>,
        own: Option<(Upstreams, forward::Forwarder)>,
    ) -> Ctx {
        Ctx {
            ns: ns.to_string(),
            shared,
            own,
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
        }
    }

    /// Answers a query that may need an upstream (every TCP query, and the UDP ones
    /// the table does not answer), and counts the answer.
    pub(super) async fn resolve(&self, query: &[u8], seed: u64, udp: bool) -> Vec<u8> {
        let t0 = std::time::Instant::now();
        let (source, a) = self.resolve_from(query, seed, udp).await;
        crate::metrics::instruments::dns_answer(source, &a, t0.elapsed());
        a
    }

    async fn resolve_from(
        &self,
        query: &[u8],
        seed: u64,
        udp: bool,
    ) -> (crate::metrics::instruments::Source, Vec<u8>) {
        use crate::metrics::instruments::Source;
        let table = self.shared.table();
        let reply = answer(&table, &self.ns, query, seed, udp);
        match reply {
            Reply::Answer(a) => (Source::Local, a),
            Reply::Forward => {
                let forward = table.client(&self.ns).is_some_and(|c| c.forward);
                drop(table);
                if !forward {
                    return (Source::Local, refuse(query));
                }
                let Ok(_permit) = self.in_flight.try_acquire() else {
                    return (Source::Local, servfail(query));
                };
                let r = match &self.own {
                    Some((ups, fwd)) => forward::forward(ups, fwd, query).await,
                    None => match &self.shared.host_forwarder {
                        Some(fwd) => {
                            forward::forward(&self.shared.host_upstreams, fwd, query).await
                        }
                        None => None,
                    },
                };
                (Source::Forwarded, r.unwrap_or_else(|| servfail(query)))
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn arpa_names() {
        let n = Name::from_ascii("4.3.2.10.in-addr.arpa.").unwrap();
        assert_eq!(arpa_v4(&n), Some(Ipv4Addr::new(10, 2, 3, 4)));
        assert_eq!(arpa_v4(&Name::from_ascii("example.com.").unwrap()), None);
        let n6 = Name::from_ascii(
            "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa.",
        )
        .unwrap();
        assert_eq!(arpa(&n6), Some("fd00:1::2".parse().unwrap()));
        // Upper case is the same name; a short, padded or non-hex name is not an address.
        let upper = Name::from_ascii(n6.to_ascii().to_uppercase()).unwrap();
        assert_eq!(arpa_v6(&upper), Some("fd00:1::2".parse().unwrap()));
        for bad in [
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.ip6.arpa.",
            "02.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa.",
            "g.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa.",
            "ip6.arpa.",
        ] {
            assert_eq!(arpa(&Name::from_ascii(bad).unwrap()), None, "{bad}");
        }
    }

    #[test]
    fn unknown_names_forward_and_garbage_gets_formerr() {
        let t = Table::default();
        let mut q = Message::query();
        q.add_query(Query::query(
            Name::from_ascii("example.com.").unwrap(),
            RecordType::A,
        ));
        assert!(matches!(
            answer(&t, "ns", &encode(&q), 1, true),
            Reply::Forward
        ));
        let Reply::Answer(a) = answer(&t, "ns", &[0xab, 0xcd, 0xff], 1, true) else {
            panic!("garbage must be answered");
        };
        let m = Message::from_vec(&a).unwrap();
        assert_eq!(m.metadata.id, 0xabcd);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    }

    /// `n` containers `c0`, `c1`, ... at 10.1.0.2, 10.1.0.3, ..., each in namespace
    /// `ns<i>` and all with the alias "pool", on one user network.
    pub(in crate::dns) fn pool_table(n: u8) -> Table {
        pool_table_v6(n, false)
    }

    /// `pool_table`, with `ipv6`: dual stack, c<i> also at fd00:1::<i + 2>.
    fn pool_table_v6(n: u8, ipv6: bool) -> Table {
        use crate::model::{test_attachment, test_network, Attachment, Container, Network};
        let net = Network {
            builtin: false,
            ..match ipv6 {
                true => crate::model::test_network6(),
                false => test_network(),
            }
        };
        let mut st = crate::store::State::default();
        st.networks.push(net.clone());
        for i in 0..n {
            let a = Attachment {
                network: net.id.clone(),
                ip: [10, 1, 0, i + 2].into(),
                ip6: ipv6.then(|| Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, u16::from(i) + 2)),
                aliases: vec!["pool".into()],
                ..test_attachment()
            };
            let mut c: Container = serde_json::from_value(serde_json::json!({
                "id": format!("{i:064}"), "name": format!("c{i}"), "hostname": null,
                "mode": "bridge", "netns": format!("ns{i}"), "attachments": [], "ports": [],
                "cmd": [], "state": "running", "pid": null, "pid_start": null,
                "exit_code": null, "auto_remove": false, "created": 0
            }))
            .unwrap();
            c.attachments.push(a);
            st.containers.push(c.into());
        }
        Table::build(&st)
    }

    fn query(id: u16, name: &str, t: RecordType) -> Message {
        let mut q = Message::query();
        q.metadata.id = id;
        q.metadata.recursion_desired = true;
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        q
    }

    /// The answers as the server built them before it encoded into reused buffers: a
    /// whole `Message`, encoded with `to_vec`. The bytes must not change.
    fn reference(q: &Message, found: &[Ipv4Addr], seed: u64, ptr: Option<&str>) -> Vec<u8> {
        let mut m = response(q, ResponseCode::NoError);
        let name = q.queries[0].name().clone();
        if let Some(t) = ptr {
            let t = Name::from_ascii(format!("{t}.")).unwrap();
            m.add_answer(Record::from_rdata(name, TTL, RData::PTR(PTR(t))));
            return encode(&m);
        }
        m.metadata.authoritative = true;
        if matches!(q.queries[0].query_type(), RecordType::A | RecordType::ANY) {
            let mut ips = found.to_vec();
            shuffle(&mut ips, seed);
            for ip in ips {
                m.add_answer(Record::from_rdata(name.clone(), TTL, RData::A(A(ip))));
            }
        }
        encode(&m)
    }

    #[test]
    fn answers_are_byte_for_byte_those_of_a_whole_message() {
        let t = pool_table(3);
        let pool: Vec<Ipv4Addr> = (2..5).map(|i| Ipv4Addr::new(10, 1, 0, i)).collect();
        let mut out = Vec::new();
        for (q, want) in [
            (
                query(1, "pool.", RecordType::A),
                reference(&query(1, "pool.", RecordType::A), &pool, 9, None),
            ),
            (
                query(2, "C1", RecordType::A),
                reference(&query(2, "C1", RecordType::A), &pool[1..2], 9, None),
            ),
            (
                query(3, "pool.", RecordType::AAAA),
                reference(&query(3, "pool.", RecordType::AAAA), &pool, 9, None),
            ),
            (
                query(4, "3.0.1.10.in-addr.arpa.", RecordType::PTR),
                reference(
                    &query(4, "3.0.1.10.in-addr.arpa.", RecordType::PTR),
                    &[],
                    9,
                    Some("c1"),
                ),
            ),
        ] {
            let h = answer_into(&t, "ns0", &encode(&q), 9, true, &mut out);
            assert_eq!(h, Handled::Answered);
            assert_eq!(out, want, "{q}");
        }
        // No question: FORMERR; a question of another opcode: NOTIMP; both echo the header.
        let mut none = query(5, "pool.", RecordType::A);
        none.queries.clear();
        answer_into(&t, "ns0", &encode(&none), 9, true, &mut out);
        assert_eq!(out, encode(&response(&none, ResponseCode::FormErr)));
        let mut notify = query(6, "pool.", RecordType::A);
        notify.metadata.op_code = OpCode::Notify;
        answer_into(&t, "ns0", &encode(&notify), 9, true, &mut out);
        assert_eq!(out, encode(&response(&notify, ResponseCode::NotImp)));
        // Garbage: FORMERR with its id, as Message::error_msg encodes it.
        answer_into(&t, "ns0", &[0xab, 0xcd, 0xff], 9, true, &mut out);
        assert_eq!(
            out,
            encode(&Message::error_msg(
                0xabcd,
                OpCode::Query,
                ResponseCode::FormErr
            ))
        );
    }

    #[test]
    fn a_big_udp_answer_is_truncated_and_whole_over_tcp() {
        // 60 A records do not fit 512 bytes.
        let t = pool_table(60);
        let mut q = Message::query();
        q.add_query(Query::query(
            Name::from_ascii("pool.").unwrap(),
            RecordType::A,
        ));
        let Reply::Answer(udp) = answer(&t, "ns0", &encode(&q), 7, true) else {
            panic!("pool is a local name");
        };
        let m = Message::from_vec(&udp).unwrap();
        assert!(udp.len() <= 512 && m.metadata.truncation && m.answers.is_empty());
        // The bytes Message::truncate gave before.
        let mut whole = response(&q, ResponseCode::NoError);
        whole.metadata.authoritative = true;
        assert_eq!(udp, encode(&whole.truncate()));
        let Reply::Answer(tcp) = answer(&t, "ns0", &encode(&q), 7, false) else {
            panic!("pool is a local name");
        };
        let m = Message::from_vec(&tcp).unwrap();
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 60);
        assert_eq!(m.metadata.id, q.metadata.id);
    }

    /// The data of the answers of `q` as `ns0` of a dual-stack pool of 3 gets them.
    fn answers6(q: &Message) -> (ResponseCode, Vec<String>) {
        let t = pool_table_v6(3, true);
        let Reply::Answer(a) = answer(&t, "ns0", &encode(q), 5, true) else {
            panic!("{q} must be answered here");
        };
        let m = Message::from_vec(&a).unwrap();
        let mut data: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
        data.sort();
        (m.metadata.response_code, data)
    }

    #[test]
    fn aaaa_any_and_ptr6_on_a_dual_stack_network() {
        let ok = ResponseCode::NoError;
        assert_eq!(
            answers6(&query(1, "c1.", RecordType::AAAA)),
            (ok, vec!["fd00:1::3".to_string()])
        );
        assert_eq!(
            answers6(&query(2, "c1.", RecordType::A)),
            (ok, vec!["10.1.0.3".to_string()])
        );
        assert_eq!(
            answers6(&query(3, "C1", RecordType::ANY)),
            (ok, vec!["10.1.0.3".to_string(), "fd00:1::3".to_string()])
        );
        // The shared alias: every IPv6 address.
        assert_eq!(
            answers6(&query(4, "pool.", RecordType::AAAA)),
            (
                ok,
                ["fd00:1::2", "fd00:1::3", "fd00:1::4"]
                    .map(String::from)
                    .to_vec()
            )
        );
        let ptr = "4.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa.";
        assert_eq!(
            answers6(&query(5, ptr, RecordType::PTR)),
            (ok, vec!["c2.".to_string()])
        );
        // Without IPv6 on the network: AAAA is NOERROR and empty, the name exists.
        let t = pool_table(3);
        let Reply::Answer(a) = answer(
            &t,
            "ns0",
            &encode(&query(6, "c1.", RecordType::AAAA)),
            5,
            true,
        ) else {
            panic!("c1 is a local name");
        };
        let m = Message::from_vec(&a).unwrap();
        assert_eq!(m.metadata.response_code, ok);
        assert!(m.answers.is_empty());
        // A PTR of an address no container has is not ours to answer.
        let other = "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa.";
        let t = pool_table_v6(3, true);
        assert!(matches!(
            answer(
                &t,
                "ns0",
                &encode(&query(7, other, RecordType::PTR)),
                5,
                true
            ),
            Reply::Forward
        ));
    }

    #[test]
    fn shuffle_keeps_every_element() {
        let mut v: Vec<u32> = (0..10).collect();
        shuffle(&mut v, 42);
        let mut s = v.clone();
        s.sort();
        assert_eq!(s, (0..10).collect::<Vec<_>>());
    }
}
