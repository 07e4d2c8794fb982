//! The D-Bus wire format, as far as talking to systemd needs it: values of every basic and
//! container type, and messages (header fields + body), in the little-endian encoding we
//! send and either encoding on receipt. Pure code over byte buffers, unit-tested below.
//!
//! Layout rules (D-Bus specification, "Message Protocol"): every value is aligned to its
//! natural size relative to the start of the message (1 for bytes, signatures and
//! variants, 2, 4 or 8 for integers, 4 for strings and array lengths, 8 for structs and
//! dict entries); an array is its byte length (u32), padding to the element alignment, then
//! the elements; a string is its length, the bytes and a NUL.

use std::fmt;

/// One D-Bus value. Arrays carry their element signature so that an empty one can still be
/// encoded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Byte(u8),
    Bool(bool),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    U64(u64),
    Double(f64),
    Str(String),
    Path(String),
    Sig(String),
    /// Element signature and elements.
    Array(String, Vec<Value>),
    Struct(Vec<Value>),
    Variant(Box<Value>),
    DictEntry(Box<Value>, Box<Value>),
    /// An index into the message's file descriptors (we never send or keep any).
    Fd(u32),
}

impl Value {
    pub(crate) fn str(s: impl Into<String>) -> Value {
        Value::Str(s.into())
    }

    /// A `(sv)` struct: one property of a unit.
    pub(crate) fn prop(name: &str, v: Value) -> Value {
        Value::Struct(vec![Value::str(name), Value::Variant(Box::new(v))])
    }

    /// The value's type signature.
    pub(crate) fn signature(&self) -> String {
        match self {
            Value::Byte(_) => "y".into(),
            Value::Bool(_) => "b".into(),
            Value::I16(_) => "n".into(),
            Value::U16(_) => "q".into(),
            Value::I32(_) => "i".into(),
            Value::U32(_) => "u".into(),
            Value::I64(_) => "x".into(),
            Value::U64(_) => "t".into(),
            Value::Double(_) => "d".into(),
            Value::Str(_) => "s".into(),
            Value::Path(_) => "o".into(),
            Value::Sig(_) => "g".into(),
            Value::Array(elem, _) => format!("a{elem}"),
            Value::Struct(fields) => format!("({})", fields.iter().map(Value::signature).collect::<String>()),
            Value::Variant(_) => "v".into(),
            Value::DictEntry(k, v) => format!("{{{}{}}}", k.signature(), v.signature()),
            Value::Fd(_) => "h".into(),
        }
    }

    /// The string inside a `s`, `o` or `g` value (or a variant holding one).
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) | Value::Path(s) | Value::Sig(s) => Some(s),
            Value::Variant(v) => v.as_str(),
            _ => None,
        }
    }

    /// An unsigned integer value (or a variant holding one).
    pub(crate) fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Byte(n) => Some(u64::from(*n)),
            Value::U16(n) => Some(u64::from(*n)),
            Value::U32(n) => Some(u64::from(*n)),
            Value::U64(n) => Some(*n),
            Value::Variant(v) => v.as_u64(),
            _ => None,
        }
    }
}

/// What went wrong decoding bytes from the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WireError(pub String);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed D-Bus message: {}", self.0)
    }
}

type WResult<T> = std::result::Result<T, WireError>;

fn bad<T>(what: impl Into<String>) -> WResult<T> {
    Err(WireError(what.into()))
}

/// Alignment of the type starting with `c`.
fn alignment(c: u8) -> usize {
    match c {
        b'y' | b'g' | b'v' => 1,
        b'n' | b'q' => 2,
        b'b' | b'i' | b'u' | b's' | b'o' | b'a' | b'h' => 4,
        _ => 8, // x t d ( {
    }
}

/// Splits the first complete type off `sig`: `"a(sv)s"` → `("a(sv)", "s")`.
pub(crate) fn split_type(sig: &str) -> WResult<(&str, &str)> {
    fn end(b: &[u8], i: usize, depth: usize) -> WResult<usize> {
        if depth > 64 {
            return bad("signature nested too deeply");
        }
        match b.get(i) {
            None => bad("signature ends inside a type"),
            Some(b'a') => end(b, i + 1, depth + 1),
            Some(&open @ (b'(' | b'{')) => {
                let close = if open == b'(' { b')' } else { b'}' };
                let mut j = i + 1;
                while b.get(j) != Some(&close) {
                    if j >= b.len() {
                        return bad("unclosed struct in signature");
                    }
                    j = end(b, j, depth + 1)?;
                }
                Ok(j + 1)
            }
            Some(c) if b"ybnqiuxtdsogvh".contains(c) => Ok(i + 1),
            Some(c) => bad(format!("unknown type code {:?} in signature", *c as char)),
        }
    }
    let n = end(sig.as_bytes(), 0, 0)?;
    Ok(sig.split_at(n))
}

/// Builds a message body (or a whole message) in little-endian order.
#[derive(Debug, Default)]
pub(crate) struct Encoder {
    pub buf: Vec<u8>,
}

impl Encoder {
    fn pad(&mut self, align: usize) {
        while !self.buf.len().is_multiple_of(align) {
            self.buf.push(0);
        }
    }

    fn put_str(&mut self, s: &str) {
        self.pad(4);
        self.buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
    }

    /// Appends `v`, aligned as its type requires.
    pub(crate) fn put(&mut self, v: &Value) {
        match v {
            Value::Byte(b) => self.buf.push(*b),
            Value::Bool(b) => self.put_u32(u32::from(*b)),
            Value::I16(n) => {
                self.pad(2);
                self.buf.extend_from_slice(&n.to_le_bytes());
            }
            Value::U16(n) => {
                self.pad(2);
                self.buf.extend_from_slice(&n.to_le_bytes());
            }
            Value::I32(n) => {
                self.pad(4);
                self.buf.extend_from_slice(&n.to_le_bytes());
            }
            Value::U32(n) | Value::Fd(n) => self.put_u32(*n),
            Value::I64(n) => {
                self.pad(8);
                self.buf.extend_from_slice(&n.to_le_bytes());
            }
            Value::U64(n) => {
                self.pad(8);
                self.buf.extend_from_slice(&n.to_le_bytes());
            }
            Value::Double(d) => {
                self.pad(8);
                self.buf.extend_from_slice(&d.to_le_bytes());
            }
            Value::Str(s) | Value::Path(s) => self.put_str(s),
            Value::Sig(s) => {
                self.buf.push(s.len() as u8);
                self.buf.extend_from_slice(s.as_bytes());
                self.buf.push(0);
            }
            Value::Array(elem, items) => {
                self.pad(4);
                let len_at = self.buf.len();
                self.buf.extend_from_slice(&[0; 4]);
                self.pad(alignment(elem.as_bytes().first().copied().unwrap_or(b'y')));
                let start = self.buf.len();
                for item in items {
                    self.put(item);
                }
                let len = (self.buf.len() - start) as u32;
                self.buf[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
            }
            Value::Struct(fields) => {
                self.pad(8);
                for f in fields {
                    self.put(f);
                }
            }
            Value::Variant(inner) => {
                self.put(&Value::Sig(inner.signature()));
                self.put(inner);
            }
            Value::DictEntry(k, v) => {
                self.pad(8);
                self.put(k);
                self.put(v);
            }
        }
    }

    fn put_u32(&mut self, n: u32) {
        self.pad(4);
        self.buf.extend_from_slice(&n.to_le_bytes());
    }
}

/// Reads values from a received message; offsets are relative to the message start, where
/// alignment is counted from.
pub(crate) struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    big_endian: bool,
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(buf: &'a [u8], pos: usize, big_endian: bool) -> Decoder<'a> {
        Decoder { buf, pos, big_endian }
    }

    fn align(&mut self, n: usize) -> WResult<()> {
        let to = self.pos.div_ceil(n) * n;
        if to > self.buf.len() {
            return bad("truncated (padding)");
        }
        self.pos = to;
        Ok(())
    }

    fn take(&mut self, n: usize) -> WResult<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        let Some(end) = end else { return bad("truncated") };
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn fixed<const N: usize>(&mut self) -> WResult<[u8; N]> {
        self.align(N)?;
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        if self.big_endian {
            a.reverse();
        }
        Ok(a)
    }

    fn u32(&mut self) -> WResult<u32> {
        Ok(u32::from_le_bytes(self.fixed::<4>()?))
    }

    fn string(&mut self, len: usize) -> WResult<String> {
        let bytes = self.take(len)?;
        if self.take(1)? != [0] {
            return bad("string without its NUL");
        }
        String::from_utf8(bytes.to_vec()).map_err(|_| WireError("string is not UTF-8".into()))
    }

    /// Reads one value of the complete type `sig`.
    pub(crate) fn get(&mut self, sig: &str) -> WResult<Value> {
        self.get_depth(sig, 0)
    }

    fn get_depth(&mut self, sig: &str, depth: usize) -> WResult<Value> {
        if depth > 64 {
            return bad("value nested too deeply");
        }
        let code = sig.as_bytes().first().copied().unwrap_or(0);
        Ok(match code {
            b'y' => Value::Byte(self.take(1)?[0]),
            b'b' => Value::Bool(self.u32()? != 0),
            b'n' => Value::I16(i16::from_le_bytes(self.fixed::<2>()?)),
            b'q' => Value::U16(u16::from_le_bytes(self.fixed::<2>()?)),
            b'i' => Value::I32(i32::from_le_bytes(self.fixed::<4>()?)),
            b'u' => Value::U32(self.u32()?),
            b'h' => Value::Fd(self.u32()?),
            b'x' => Value::I64(i64::from_le_bytes(self.fixed::<8>()?)),
            b't' => Value::U64(u64::from_le_bytes(self.fixed::<8>()?)),
            b'd' => Value::Double(f64::from_le_bytes(self.fixed::<8>()?)),
            b's' | b'o' => {
                let len = self.u32()? as usize;
                let s = self.string(len)?;
                if code == b's' {
                    Value::Str(s)
                } else {
                    Value::Path(s)
                }
            }
            b'g' => {
                let len = usize::from(self.take(1)?[0]);
                Value::Sig(self.string(len)?)
            }
            b'v' => {
                let len = usize::from(self.take(1)?[0]);
                let inner = self.string(len)?;
                let (t, rest) = split_type(&inner)?;
                if !rest.is_empty() {
                    return bad("variant signature holds more than one type");
                }
                Value::Variant(Box::new(self.get_depth(t, depth + 1)?))
            }
            b'a' => {
                let len = self.u32()? as usize;
                let elem = &sig[1..];
                self.align(alignment(elem.as_bytes().first().copied().unwrap_or(b'y')))?;
                let end = self.pos.checked_add(len).filter(|e| *e <= self.buf.len());
                let Some(end) = end else { return bad("array longer than the message") };
                let mut items = Vec::new();
                while self.pos < end {
                    items.push(self.get_depth(elem, depth + 1)?);
                }
                if self.pos != end {
                    return bad("array elements overrun its length");
                }
                Value::Array(elem.to_string(), items)
            }
            b'(' => {
                self.align(8)?;
                let mut inner = &sig[1..sig.len() - 1];
                let mut fields = Vec::new();
                while !inner.is_empty() {
                    let (t, rest) = split_type(inner)?;
                    fields.push(self.get_depth(t, depth + 1)?);
                    inner = rest;
                }
                Value::Struct(fields)
            }
            b'{' => {
                self.align(8)?;
                let (k, v) = split_type(&sig[1..sig.len() - 1])?;
                let key = self.get_depth(k, depth + 1)?;
                let val = self.get_depth(v, depth + 1)?;
                Value::DictEntry(Box::new(key), Box::new(val))
            }
            _ => return bad(format!("unknown type signature {sig:?}")),
        })
    }
}

/// Message types.
pub(crate) const METHOD_CALL: u8 = 1;
pub(crate) const METHOD_RETURN: u8 = 2;
pub(crate) const ERROR: u8 = 3;
pub(crate) const SIGNAL: u8 = 4;

/// One message, with the header fields we use.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Message {
    pub kind: u8,
    pub serial: u32,
    pub path: Option<String>,
    pub interface: Option<String>,
    pub member: Option<String>,
    pub error_name: Option<String>,
    pub reply_serial: Option<u32>,
    pub destination: Option<String>,
    pub body: Vec<Value>,
}

impl Message {
    /// A method call.
    pub(crate) fn call(destination: Option<&str>, path: &str, interface: &str, member: &str, body: Vec<Value>) -> Message {
        Message {
            kind: METHOD_CALL,
            path: Some(path.into()),
            interface: Some(interface.into()),
            member: Some(member.into()),
            destination: destination.map(str::to_string),
            body,
            ..Default::default()
        }
    }

    /// The message as bytes, with `serial`.
    pub(crate) fn encode(&self, serial: u32) -> Vec<u8> {
        let mut body = Encoder::default();
        for v in &self.body {
            body.put(v);
        }
        let signature: String = self.body.iter().map(Value::signature).collect();
        let field = |code: u8, v: Value| Value::Struct(vec![Value::Byte(code), Value::Variant(Box::new(v))]);
        let mut fields = Vec::new();
        if let Some(p) = &self.path {
            fields.push(field(1, Value::Path(p.clone())));
        }
        if let Some(i) = &self.interface {
            fields.push(field(2, Value::str(i.clone())));
        }
        if let Some(m) = &self.member {
            fields.push(field(3, Value::str(m.clone())));
        }
        if let Some(e) = &self.error_name {
            fields.push(field(4, Value::str(e.clone())));
        }
        if let Some(r) = self.reply_serial {
            fields.push(field(5, Value::U32(r)));
        }
        if let Some(d) = &self.destination {
            fields.push(field(6, Value::str(d.clone())));
        }
        if !signature.is_empty() {
            fields.push(field(8, Value::Sig(signature)));
        }
        let mut m = Encoder::default();
        m.buf.extend_from_slice(&[b'l', self.kind, 0, 1]);
        m.buf.extend_from_slice(&(body.buf.len() as u32).to_le_bytes());
        m.buf.extend_from_slice(&serial.to_le_bytes());
        m.put(&Value::Array("(yv)".into(), fields));
        m.pad(8);
        m.buf.extend_from_slice(&body.buf);
        m.buf
    }

    /// How many bytes the message whose first 16 bytes are `head` takes in all.
    pub(crate) fn total_len(head: &[u8; 16]) -> WResult<usize> {
        let big = match head[0] {
            b'l' => false,
            b'B' => true,
            c => return bad(format!("endianness byte {c:#x}")),
        };
        let num = |b: &[u8]| {
            let a = [b[0], b[1], b[2], b[3]];
            if big {
                u32::from_be_bytes(a)
            } else {
                u32::from_le_bytes(a)
            }
        };
        // In u64: two u32 lengths plus padding cannot overflow it, on any target.
        let body = u64::from(num(&head[4..8]));
        let fields = u64::from(num(&head[12..16]));
        let total = (16 + fields).div_ceil(8) * 8 + body;
        // The specification's limit for one message.
        if total > 128 << 20 {
            return bad(format!("message of {total} bytes"));
        }
        usize::try_from(total).or_else(|_| bad(format!("message of {total} bytes")))
    }

    /// Parses one whole message.
    pub(crate) fn decode(buf: &[u8]) -> WResult<Message> {
        if buf.len() < 16 {
            return bad("shorter than a header");
        }
        let big_endian = buf[0] == b'B';
        let mut d = Decoder::new(buf, 4, big_endian);
        let body_len = d.u32()? as usize;
        let serial = d.u32()?;
        let fields = d.get("a(yv)")?;
        let mut m = Message { kind: buf[1], serial, ..Default::default() };
        let mut signature = String::new();
        if let Value::Array(_, fields) = fields {
            for f in fields {
                let Value::Struct(kv) = f else { continue };
                let (Some(Value::Byte(code)), Some(v)) = (kv.first(), kv.get(1)) else { continue };
                match code {
                    1 => m.path = v.as_str().map(str::to_string),
                    2 => m.interface = v.as_str().map(str::to_string),
                    3 => m.member = v.as_str().map(str::to_string),
                    4 => m.error_name = v.as_str().map(str::to_string),
                    5 => m.reply_serial = v.as_u64().and_then(|n| u32::try_from(n).ok()),
                    6 => m.destination = v.as_str().map(str::to_string),
                    8 => signature = v.as_str().unwrap_or_default().to_string(),
                    _ => {}
                }
            }
        }
        d.align(8)?;
        if d.pos + body_len != buf.len() {
            return bad("body length does not match the message");
        }
        let mut rest = signature.as_str();
        while !rest.is_empty() {
            let (t, r) = split_type(rest)?;
            m.body.push(d.get(t)?);
            rest = r;
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(v: Value) {
        let mut e = Encoder::default();
        e.put(&v);
        let sig = v.signature();
        let got = Decoder::new(&e.buf, 0, false).get(&sig);
        assert_eq!(got, Ok(v), "{sig}");
    }

    #[test]
    fn values_roundtrip() {
        roundtrip(Value::Byte(7));
        roundtrip(Value::Bool(true));
        roundtrip(Value::U64(u64::MAX));
        roundtrip(Value::I32(-5));
        roundtrip(Value::Array("y".into(), vec![Value::Byte(0x0f), Value::Byte(1)]));
        roundtrip(Value::Array("(st)".into(), vec![]));
        roundtrip(Value::Struct(vec![Value::Byte(1), Value::Variant(Box::new(Value::U64(3)))]));
        roundtrip(Value::Array(
            "(sv)".into(),
            vec![
                Value::prop("Delegate", Value::Bool(true)),
                Value::prop("PIDs", Value::Array("u".into(), vec![Value::U32(42)])),
                Value::prop("DeviceAllow", Value::Array("(ss)".into(), vec![Value::Struct(vec![Value::str("char-*"), Value::str("m")])])),
            ],
        ));
        roundtrip(Value::Array(
            "{sv}".into(),
            vec![Value::DictEntry(Box::new(Value::str("k")), Box::new(Value::Variant(Box::new(Value::I16(-2)))))],
        ));
    }

    #[test]
    fn alignment_of_an_empty_array_of_structs() {
        // u32 length, then padding to 8 even though there are no elements.
        let mut e = Encoder::default();
        e.put(&Value::Byte(1));
        e.put(&Value::Array("(sv)".into(), vec![]));
        assert_eq!(e.buf, [1, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn split_types() {
        assert_eq!(split_type("a(sv)s"), Ok(("a(sv)", "s")));
        assert_eq!(split_type("a{sa(sv)}"), Ok(("a{sa(sv)}", "")));
        assert_eq!(split_type("uoss"), Ok(("u", "oss")));
        assert!(split_type("(s").is_err());
        assert!(split_type("a").is_err());
        assert!(split_type("z").is_err());
    }

    /// A method call, its layout checked against the specification by hand.
    #[test]
    fn method_call_bytes() {
        let m = Message::call(
            Some("org.freedesktop.systemd1"),
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "GetUnit",
            vec![Value::str("a.scope")],
        );
        let b = m.encode(3);
        assert_eq!(&b[..4], b"l\x01\x00\x01");
        assert_eq!(u32::from_le_bytes([b[4], b[5], b[6], b[7]]), 12, "body: u32 length + 7 bytes + NUL");
        assert_eq!(u32::from_le_bytes([b[8], b[9], b[10], b[11]]), 3);
        assert_eq!(&b[b.len() - 12..], b"\x07\x00\x00\x00a.scope\x00");
        assert_eq!((b.len() - 12) % 8, 0, "body starts 8-aligned");
        let back = Message::decode(&b);
        let Ok(back) = back else { panic!("{back:?}") };
        assert_eq!(back.member.as_deref(), Some("GetUnit"));
        assert_eq!(back.destination.as_deref(), Some("org.freedesktop.systemd1"));
        assert_eq!(back.body, vec![Value::str("a.scope")]);
        let mut head = [0u8; 16];
        head.copy_from_slice(&b[..16]);
        assert_eq!(Message::total_len(&head), Ok(b.len()));
    }

    #[test]
    fn big_endian_reply_decodes() {
        // An error reply, big-endian: ERROR_NAME "x.Y", REPLY_SERIAL 2, SIGNATURE "s", body "no".
        let mut b: Vec<u8> = vec![b'B', ERROR, 0, 1, 0, 0, 0, 7, 0, 0, 0, 9, 0, 0, 0, 31];
        b.extend_from_slice(&[4, 1, b's', 0, 0, 0, 0, 3, b'x', b'.', b'Y', 0]); // offsets 16..28
        b.extend_from_slice(&[0, 0, 0, 0, 5, 1, b'u', 0, 0, 0, 0, 2]); // pad, 32..40
        b.extend_from_slice(&[8, 1, b'g', 0, 1, b's', 0]); // 40..47: the array ends here
        b.push(0); // pad the header to 48
        b.extend_from_slice(&[0, 0, 0, 2, b'n', b'o', 0]);
        let m = Message::decode(&b);
        let Ok(m) = m else { panic!("{m:?}") };
        assert_eq!(m.kind, ERROR);
        assert_eq!(m.serial, 9);
        assert_eq!(m.error_name.as_deref(), Some("x.Y"));
        assert_eq!(m.reply_serial, Some(2));
        assert_eq!(m.body, vec![Value::str("no")]);
        let mut head = [0u8; 16];
        head.copy_from_slice(&b[..16]);
        assert_eq!(Message::total_len(&head), Ok(b.len()));
    }

    #[test]
    fn hostile_input_is_an_error_not_a_panic() {
        let good = Message::call(None, "/a", "b.C", "D", vec![Value::Array("s".into(), vec![Value::str("x")])]).encode(1);
        for cut in 0..good.len() {
            let _ = Message::decode(&good[..cut]);
        }
        let mut huge = good.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Message::decode(&huge).is_err());
        let mut head = [0u8; 16];
        head.copy_from_slice(&huge[..16]);
        assert!(Message::total_len(&head).is_err());
        assert!(Decoder::new(&[0xff, 0xff, 0xff, 0xff], 0, false).get("as").is_err());
    }
}
