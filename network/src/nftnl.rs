//! A small nf_tables client over netlink (NETLINK_NETFILTER), written by hand because no
//! well-kept pure-Rust crate speaks it without libnftnl: it builds exactly the few rule shapes
//! capsa's NAT needs (see [`crate::firewall`]), sends them as one atomic batch, lists the rules
//! of a table (chain, handle, comment) and deletes rules by handle. A `nft -f -` run costs
//! about 5 ms (process start, cache fetch); a batch here costs a fraction of a millisecond.
//!
//! Wire format (linux/netfilter/nf_tables.h, nfnetlink.h): each message is an nlmsghdr, a
//! 4-byte nfgenmsg (family, version 0, resource id) and attributes; every number inside
//! nf_tables attributes is big-endian; register contents are compared as raw bytes (so what
//! the kernel stores in host order, fib's address type and ct status, is given in host order).
//! Rule comments live in the rule's user data as libnftnl writes them (type 0, length, text
//! with its NUL), so `nft list ruleset` shows them.

use std::net::{Ipv4Addr, Ipv6Addr};

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use crate::error::{Error, Result};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;

/// A table's family: `ip` (IPv4) or `ip6`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Ip,
    Ip6,
}

impl Family {
    fn proto(self) -> u8 {
        match self {
            Family::Ip => NFPROTO_IPV4,
            Family::Ip6 => NFPROTO_IPV6,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
        }
    }
}

const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;

const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;

// Attribute numbers.
const TABLE_NAME: u16 = 1;
const CHAIN_TABLE: u16 = 1;
const CHAIN_NAME: u16 = 3;
const CHAIN_HOOK: u16 = 4;
const CHAIN_POLICY: u16 = 5;
const CHAIN_TYPE: u16 = 7;
const HOOK_HOOKNUM: u16 = 1;
const HOOK_PRIORITY: u16 = 2;
const RULE_TABLE: u16 = 1;
const RULE_CHAIN: u16 = 2;
const RULE_HANDLE: u16 = 3;
const RULE_EXPRESSIONS: u16 = 4;
const RULE_USERDATA: u16 = 7;
const LIST_ELEM: u16 = 1;
const EXPR_NAME: u16 = 1;
const EXPR_DATA: u16 = 2;
const DATA_VALUE: u16 = 1;

const REG_1: u32 = 1;
const REG_2: u32 = 2;

/// The netfilter hooks capsa's chains sit on.
#[derive(Clone, Copy)]
pub enum Hook {
    Prerouting = 0,
    Forward = 2,
    Output = 3,
    Postrouting = 4,
}

/// A netlink attribute tree being built.
#[derive(Default)]
struct Attrs(Vec<u8>);

impl Attrs {
    fn raw(mut self, ty: u16, v: &[u8]) -> Attrs {
        let len = 4 + v.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(v);
        self.0.resize((self.0.len() + 3) & !3, 0);
        self
    }
    fn str(self, ty: u16, s: &str) -> Attrs {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.raw(ty, &v)
    }
    fn be32(self, ty: u16, n: u32) -> Attrs {
        self.raw(ty, &n.to_be_bytes())
    }
    fn nest(self, ty: u16, inner: Attrs) -> Attrs {
        self.raw(ty | NLA_F_NESTED, &inner.0)
    }
}

/// One expression of a rule: its name and its attributes.
pub struct Expr(&'static str, Attrs);

fn data(bytes: &[u8]) -> Attrs {
    Attrs::default().raw(DATA_VALUE, bytes)
}

/// Register 1 = meta key (7 oifname, 16 l4proto).
fn meta(key: u32) -> Expr {
    Expr("meta", Attrs::default().be32(1, REG_1).be32(2, key))
}
/// Register 1 == / != bytes.
fn cmp(eq: bool, bytes: &[u8]) -> Expr {
    Expr("cmp", Attrs::default().be32(1, REG_1).be32(2, if eq { 0 } else { 1 }).nest(3, data(bytes)))
}
/// Register 1 = `len` bytes at `offset` of the network (1) or transport (2) header.
fn payload(base: u32, offset: u32, len: u32) -> Expr {
    Expr("payload", Attrs::default().be32(1, REG_1).be32(2, base).be32(3, offset).be32(4, len))
}
/// Register 1 = register 1 & mask (xor 0).
fn and(mask: &[u8]) -> Expr {
    Expr(
        "bitwise",
        Attrs::default().be32(1, REG_1).be32(2, REG_1).be32(3, mask.len() as u32).nest(4, data(mask)).nest(5, data(&vec![0; mask.len()])),
    )
}

/// The pieces rules are made of.
pub mod expr {
    use super::*;

    /// `ip saddr SUBNET` (address and prefix length).
    pub fn saddr_in(addr: Ipv4Addr, prefix: u8) -> Vec<Expr> {
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
        vec![payload(1, 12, 4), and(&mask.to_be_bytes()), cmp(true, &(u32::from(addr) & mask).to_be_bytes())]
    }
    /// `ip daddr SUBNET`.
    pub fn daddr_in(addr: Ipv4Addr, prefix: u8) -> Vec<Expr> {
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
        vec![payload(1, 16, 4), and(&mask.to_be_bytes()), cmp(true, &(u32::from(addr) & mask).to_be_bytes())]
    }
    /// `iifname NAME`.
    pub fn iifname(name: &str) -> Vec<Expr> {
        let mut b = [0u8; 16];
        let n = name.as_bytes();
        b[..n.len().min(15)].copy_from_slice(&n[..n.len().min(15)]);
        vec![meta(6), cmp(true, &b)]
    }
    /// `iifname != NAME`.
    pub fn iifname_ne(name: &str) -> Vec<Expr> {
        let mut b = [0u8; 16];
        let n = name.as_bytes();
        b[..n.len().min(15)].copy_from_slice(&n[..n.len().min(15)]);
        vec![meta(6), cmp(false, &b)]
    }
    /// `drop` (the verdict register, 0, set to NF_DROP, 0).
    pub fn drop() -> Vec<Expr> {
        let verdict = Attrs::default().be32(1, 0);
        vec![Expr("immediate", Attrs::default().be32(1, 0).nest(2, Attrs::default().nest(2, verdict)))]
    }
    /// `ip daddr ADDR`.
    pub fn daddr_is(addr: Ipv4Addr) -> Vec<Expr> {
        vec![payload(1, 16, 4), cmp(true, &addr.octets())]
    }
    /// `oifname [!=] NAME`.
    pub fn oifname(eq: bool, name: &str) -> Vec<Expr> {
        let mut b = [0u8; 16];
        let n = name.as_bytes();
        b[..n.len().min(15)].copy_from_slice(&n[..n.len().min(15)]);
        vec![meta(7), cmp(eq, &b)]
    }
    /// `fib daddr type local`.
    pub fn daddr_local() -> Vec<Expr> {
        // Result: the address type (3) of the destination (flags: DADDR, 2); RTN_LOCAL = 2,
        // stored in host order.
        vec![Expr("fib", Attrs::default().be32(1, REG_1).be32(2, 3).be32(3, 2)), cmp(true, &2u32.to_ne_bytes())]
    }
    /// `tcp|udp dport PORT` (proto 6 or 17).
    pub fn dport(proto: u8, port: u16) -> Vec<Expr> {
        vec![meta(16), cmp(true, &[proto]), payload(2, 2, 2), cmp(true, &port.to_be_bytes())]
    }
    /// `ct status dnat`.
    pub fn ct_dnat() -> Vec<Expr> {
        // ct status (key 2) is stored in host order; IPS_DST_NAT = 0x20.
        vec![Expr("ct", Attrs::default().be32(1, REG_1).be32(2, 2)), and(&0x20u32.to_ne_bytes()), cmp(false, &0u32.to_ne_bytes())]
    }
    /// `ct state established,related`.
    pub fn ct_established() -> Vec<Expr> {
        // ct state (key 0) is stored in host order; the kernel's NF_CT_STATE_BIT:
        // ESTABLISHED = 1 << 1, RELATED = 1 << 2 (NEW = 1 << 3, INVALID = 1).
        vec![Expr("ct", Attrs::default().be32(1, REG_1).be32(2, 0)), and(&0x06u32.to_ne_bytes()), cmp(false, &0u32.to_ne_bytes())]
    }
    /// `accept` (the verdict register, 0, set to NF_ACCEPT, 1).
    pub fn accept() -> Vec<Expr> {
        let verdict = Attrs::default().be32(1, 1);
        vec![Expr("immediate", Attrs::default().be32(1, 0).nest(2, Attrs::default().nest(2, verdict)))]
    }
    /// `dnat to ADDR:PORT`.
    pub fn dnat(addr: Ipv4Addr, port: u16) -> Vec<Expr> {
        vec![
            Expr("immediate", Attrs::default().be32(1, REG_1).nest(2, data(&addr.octets()))),
            Expr("immediate", Attrs::default().be32(1, REG_2).nest(2, data(&port.to_be_bytes()))),
            // type DNAT (1), family ipv4, address and port from registers 1 and 2.
            Expr("nat", Attrs::default().be32(1, 1).be32(2, u32::from(NFPROTO_IPV4)).be32(3, REG_1).be32(5, REG_2)),
        ]
    }
    /// `ip6 saddr SUBNET` (address and prefix length).
    pub fn saddr6_in(addr: Ipv6Addr, prefix: u8) -> Vec<Expr> {
        let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
        vec![payload(1, 8, 16), and(&mask.to_be_bytes()), cmp(true, &(u128::from(addr) & mask).to_be_bytes())]
    }
    /// `ip6 daddr != ADDR`.
    pub fn daddr6_ne(addr: Ipv6Addr) -> Vec<Expr> {
        vec![payload(1, 24, 16), cmp(false, &addr.octets())]
    }
    /// `dnat ip6 to [ADDR]:PORT`.
    pub fn dnat6(addr: Ipv6Addr, port: u16) -> Vec<Expr> {
        vec![
            Expr("immediate", Attrs::default().be32(1, REG_1).nest(2, data(&addr.octets()))),
            Expr("immediate", Attrs::default().be32(1, REG_2).nest(2, data(&port.to_be_bytes()))),
            // type DNAT (1), family ipv6, address and port from registers 1 and 2.
            Expr("nat", Attrs::default().be32(1, 1).be32(2, u32::from(NFPROTO_IPV6)).be32(3, REG_1).be32(5, REG_2)),
        ]
    }
    /// `masquerade`.
    pub fn masquerade() -> Vec<Expr> {
        vec![Expr("masq", Attrs::default())]
    }
}

/// A rule as listed.
#[derive(Debug)]
pub struct Rule {
    pub chain: String,
    pub handle: u64,
    pub comment: String,
}

/// A batch of changes to one table, applied atomically by [`Batch::commit`].
pub struct Batch {
    table: String,
    family: Family,
    msgs: Vec<(u16, u16, Attrs)>,
}

impl Batch {
    /// A batch for table `ip TABLE`.
    pub fn new(table: &str) -> Batch {
        Batch::of(Family::Ip, table)
    }

    /// A batch for table `FAMILY TABLE`.
    pub fn of(family: Family, table: &str) -> Batch {
        Batch { table: table.to_string(), family, msgs: Vec::new() }
    }

    /// `add table` (no error if it exists).
    pub fn add_table(&mut self) {
        self.msgs.push((NFT_MSG_NEWTABLE, NLM_F_CREATE, Attrs::default().str(TABLE_NAME, &self.table)));
    }

    pub fn del_table(&mut self) {
        self.msgs.push((NFT_MSG_DELTABLE, 0, Attrs::default().str(TABLE_NAME, &self.table)));
    }

    /// `add chain` of type `ty` (nat, filter) on `hook` at `priority`, policy accept (no error
    /// if it exists).
    pub fn add_base_chain(&mut self, name: &str, ty: &str, hook: Hook, priority: i32) {
        let h = Attrs::default().be32(HOOK_HOOKNUM, hook as u32).be32(HOOK_PRIORITY, priority as u32);
        let a = Attrs::default()
            .str(CHAIN_TABLE, &self.table)
            .str(CHAIN_NAME, name)
            .nest(CHAIN_HOOK, h)
            .be32(CHAIN_POLICY, 1)
            .str(CHAIN_TYPE, ty);
        self.msgs.push((NFT_MSG_NEWCHAIN, NLM_F_CREATE, a));
    }

    /// Appends a rule made of `exprs` to `chain`, with `comment`.
    pub fn add_rule(&mut self, chain: &str, exprs: Vec<Vec<Expr>>, comment: &str) {
        let mut list = Attrs::default();
        for Expr(name, a) in exprs.into_iter().flatten() {
            let mut e = Attrs::default().str(EXPR_NAME, name);
            if !a.0.is_empty() {
                e = e.nest(EXPR_DATA, a);
            }
            list = list.nest(LIST_ELEM, e);
        }
        let mut ud = vec![0u8, (comment.len() + 1) as u8];
        ud.extend_from_slice(comment.as_bytes());
        ud.push(0);
        let a = Attrs::default().str(RULE_TABLE, &self.table).str(RULE_CHAIN, chain).nest(RULE_EXPRESSIONS, list).raw(RULE_USERDATA, &ud);
        self.msgs.push((NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, a));
    }

    pub fn del_rule(&mut self, chain: &str, handle: u64) {
        let a = Attrs::default().str(RULE_TABLE, &self.table).str(RULE_CHAIN, chain).raw(RULE_HANDLE, &handle.to_be_bytes());
        self.msgs.push((NFT_MSG_DELRULE, 0, a));
    }

    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// Sends the batch and waits for every message's acknowledgement; the kernel applies all
    /// of it or none.
    pub fn commit(self) -> Result<()> {
        if self.msgs.is_empty() {
            return Ok(());
        }
        let sock = open()?;
        let mut buf = Vec::new();
        let mut seq = 1;
        push_msg(&mut buf, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, 0, NFNL_SUBSYS_NFTABLES, &[]);
        for (ty, flags, a) in &self.msgs {
            seq += 1;
            push_msg(&mut buf, (NFNL_SUBSYS_NFTABLES << 8) | ty, NLM_F_REQUEST | NLM_F_ACK | flags, seq, self.family.proto(), 0, &a.0);
        }
        let last = seq;
        push_msg(&mut buf, NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq + 1, 0, NFNL_SUBSYS_NFTABLES, &[]);
        sock.send(&buf, 0).map_err(|e| Error::os("send an nftables batch", e))?;
        loop {
            for (ty, seq, payload) in recv(&sock)? {
                if ty == NLMSG_ERROR {
                    let code = payload.get(..4).map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(0);
                    if code != 0 {
                        let what = self.msgs.get((seq as usize).wrapping_sub(2)).map(|m| describe(m.0)).unwrap_or("batch");
                        return Err(Error::os(
                            format!("nftables: {what} in table {} {}", self.family.as_str(), self.table),
                            std::io::Error::from_raw_os_error(-code),
                        ));
                    }
                    if seq == last {
                        self.close_later(sock);
                        return Ok(());
                    }
                }
            }
        }
    }
}

impl Batch {
    /// Closes the socket of a committed batch. Closing a netfilter socket waits while
    /// nf_tables frees what earlier batches deleted (its NETLINK_URELEASE handler flushes that
    /// work, which first waits for an RCU grace period: 10-13 ms here, measured with strace
    /// after a batch of rule deletes). A batch that deleted closes its socket on a thread of
    /// its own; the rules are gone from the ruleset already. A process that forks afterwards
    /// (a container's start) joins those threads first: [`settle`].
    fn close_later(&self, sock: Socket) {
        if self.msgs.iter().any(|m| m.0 == NFT_MSG_DELRULE || m.0 == NFT_MSG_DELTABLE) {
            // If no thread can be made, the socket is closed here (and waits).
            if let Ok(t) = std::thread::Builder::new().name("nft-close".into()).spawn(move || drop(sock)) {
                CLOSING.lock().unwrap_or_else(|p| p.into_inner()).push(t);
            }
        }
    }
}

/// Threads closing netfilter sockets (see `Batch::close_later`).
static CLOSING: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>> = std::sync::Mutex::new(Vec::new());

/// Waits for the sockets of earlier batches to be closed, so that this process has no
/// thread of ours left: the capsa library forks a container only from a single-threaded
/// process.
pub fn settle() {
    let threads: Vec<_> = std::mem::take(&mut *CLOSING.lock().unwrap_or_else(|p| p.into_inner()));
    for t in threads {
        let _ = t.join();
    }
}

fn describe(ty: u16) -> &'static str {
    match ty {
        NFT_MSG_NEWTABLE => "add table",
        NFT_MSG_DELTABLE => "delete table",
        NFT_MSG_NEWCHAIN => "add chain",
        NFT_MSG_NEWRULE => "add rule",
        NFT_MSG_DELRULE => "delete rule",
        _ => "change",
    }
}

/// Every rule of table `ip TABLE` (none if there is no such table).
pub fn list_rules(table: &str) -> Result<Vec<Rule>> {
    list_rules_of(Family::Ip, table)
}

/// Every rule of table `FAMILY TABLE` (none if there is no such table).
pub fn list_rules_of(family: Family, table: &str) -> Result<Vec<Rule>> {
    let sock = open()?;
    let mut buf = Vec::new();
    push_msg(
        &mut buf,
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETRULE,
        NLM_F_REQUEST | NLM_F_DUMP,
        1,
        family.proto(),
        0,
        &Attrs::default().str(RULE_TABLE, table).0,
    );
    sock.send(&buf, 0).map_err(|e| Error::os("list nftables rules", e))?;
    let mut rules = Vec::new();
    loop {
        for (ty, _, payload) in recv(&sock)? {
            match ty {
                NLMSG_DONE => return Ok(rules),
                NLMSG_ERROR => {
                    let code = payload.get(..4).map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(0);
                    if code == -libc::ENOENT {
                        return Ok(rules);
                    }
                    if code != 0 {
                        return Err(Error::os(
                            format!("list the rules of table {} {table}", family.as_str()),
                            std::io::Error::from_raw_os_error(-code),
                        ));
                    }
                }
                _ => {
                    let mut r = Rule { chain: String::new(), handle: 0, comment: String::new() };
                    let mut in_table = false;
                    for (aty, v) in attrs(payload.get(4..).unwrap_or(&[])) {
                        match aty {
                            RULE_TABLE => in_table = cstr(v) == table,
                            RULE_CHAIN => r.chain = cstr(v),
                            RULE_HANDLE if v.len() == 8 => r.handle = u64::from_be_bytes([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]]),
                            RULE_USERDATA => r.comment = comment(v),
                            _ => {}
                        }
                    }
                    if in_table {
                        rules.push(r);
                    }
                }
            }
        }
    }
}

fn open() -> Result<Socket> {
    let mut sock = Socket::new(NETLINK_NETFILTER).map_err(|e| Error::os("open a netfilter netlink socket", e))?;
    sock.bind_auto().map_err(|e| Error::os("bind the netfilter netlink socket", e))?;
    sock.connect(&SocketAddr::new(0, 0)).map_err(|e| Error::os("connect the netfilter netlink socket", e))?;
    Ok(sock)
}

fn push_msg(buf: &mut Vec<u8>, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16, attrs: &[u8]) {
    let len = 16 + 4 + attrs.len();
    buf.extend_from_slice(&(len as u32).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.push(family);
    buf.push(0);
    buf.extend_from_slice(&res_id.to_be_bytes());
    buf.extend_from_slice(attrs);
}

/// One datagram's messages: (type, sequence number, payload after the nlmsghdr).
fn recv(sock: &Socket) -> Result<Vec<(u16, u32, Vec<u8>)>> {
    let (data, _) = sock.recv_from_full().map_err(|e| Error::os("read the netfilter netlink socket", e))?;
    let mut out = Vec::new();
    // A length below the header or past the datagram is an error, not the end of the
    // messages: a commit waiting for an ACK cut off that way would wait forever.
    for m in crate::rtnl::messages(&data).map_err(|e| e.context("read the netfilter netlink socket"))? {
        let ty = u16::from_ne_bytes([m[4], m[5]]);
        let seq = u32::from_ne_bytes([m[8], m[9], m[10], m[11]]);
        out.push((ty, seq, m[16..].to_vec()));
    }
    Ok(out)
}

fn attrs(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & !NLA_F_NESTED;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((ty, &b[4..len]));
        b = &b[((len + 3) & !3).min(b.len())..];
    }
    out
}

fn cstr(v: &[u8]) -> String {
    String::from_utf8_lossy(v.split(|&c| c == 0).next().unwrap_or(&[])).into_owned()
}

/// The comment (type 0) in libnftnl's rule user data: type, length, value.
fn comment(mut ud: &[u8]) -> String {
    while ud.len() >= 2 {
        let (ty, len) = (ud[0], ud[1] as usize);
        let Some(v) = ud.get(2..2 + len) else { break };
        if ty == 0 {
            return cstr(v);
        }
        ud = &ud[2 + len..];
    }
    String::new()
}
