//! Incremental, bounded decoder of the AWS event-stream framing
//! (`application/vnd.amazon.eventstream`, used by Bedrock's
//! `converse-stream` and `invoke-with-response-stream`).
//!
//! A message is
//!
//! ```text
//! total length (u32 BE) | headers length (u32 BE) | prelude CRC32 (u32 BE, over the first 8 bytes)
//! headers | payload | message CRC32 (u32 BE, over everything before it)
//! ```
//!
//! A header is a 1-byte name length, the name, a 1-byte value type and the
//! value: 0 true and 1 false (no value), 2 byte (1), 3 short (2), 4 int (4),
//! 5 long (8), 6 bytes and 7 string (2-byte BE length, then that many
//! bytes), 8 timestamp (8), 9 uuid (16). Only the string headers
//! `:event-type`, `:message-type`, `:content-type`, `:exception-type` and
//! `:error-code` are reported; the others are skipped by their sizes.
//!
//! Bytes go in with arbitrary chunking; whole messages come out through a
//! callback. Memory is bounded by the `buffer_bytes` given to
//! [`EventStreamDecoder::new`], never by a declared length:
//! * a message of at most `buffer_bytes` is delivered whole (straight from
//!   the chunk when it lies in one, else from a carry-over buffer that grows
//!   only as its bytes arrive);
//! * a larger one, up to the hard cap ([`MAX_MESSAGE_BYTES`] unless set
//!   otherwise), is streamed through: its prelude and headers are kept, its
//!   payload is checked against the message CRC as it passes and dropped,
//!   and it is delivered with [`Message::skipped`] set and an empty payload
//!   (deterministically, however the bytes were chunked);
//! * a message declared larger than the hard cap (or shorter than the 16
//!   bytes of an empty message, or whose headers length does not fit), or a
//!   bad prelude or message CRC, fails the stream: decoding stops, nothing
//!   more is delivered and [`EventStreamDecoder::error`] says why.
//!
//! A stream that ends inside a message is reported truncated by
//! [`EventStreamDecoder::finish`].

/// Bytes of an empty message (prelude and message CRC).
pub const MIN_MESSAGE_BYTES: usize = 16;

/// Default hard cap of a message's declared total length: larger fails the
/// stream.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

const PRELUDE_BYTES: usize = 12;

/// Header value types.
const TYPE_BYTES: u8 = 6;
const TYPE_STRING: u8 = 7;

/// CRC-32 (IEEE 802.3 / zlib: reflected polynomial `0xEDB88320`).
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32_update(0, bytes)
}

/// CRC-32 of the bytes whose CRC-32 is `crc`, followed by `bytes`.
pub fn crc32_update(crc: u32, bytes: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in bytes {
        c = CRC_TABLE[usize::from((c as u8) ^ b)] ^ (c >> 8);
    }
    !c
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_be_bytes([
        *b.first()?,
        *b.get(1)?,
        *b.get(2)?,
        *b.get(3)?,
    ]))
}

/// Why decoding stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The prelude CRC does not match its first 8 bytes.
    PreludeCrc,
    /// The message CRC does not match the message.
    MessageCrc,
    /// The declared total length exceeds the decoder's hard cap.
    TooLarge { declared: u32 },
    /// Total length under 16 bytes, or a headers length that does not fit
    /// in it.
    BadLength,
    /// A header runs past the headers section or has an unknown type.
    BadHeaders,
}

/// One decoded message, borrowed for the callback's duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// `:event-type` (e.g. `chunk`, `metadata`, `contentBlockDelta`).
    pub event_type: Option<&'a str>,
    /// `:message-type`: `event`, `exception` or `error`.
    pub message_type: Option<&'a str>,
    /// `:content-type` of the payload (usually `application/json`).
    pub content_type: Option<&'a str>,
    /// `:exception-type` of an `exception` message.
    pub exception_type: Option<&'a str>,
    /// `:error-code` of an `error` message.
    pub error_code: Option<&'a str>,
    /// The payload; empty when `skipped`.
    pub payload: &'a [u8],
    /// Length of the payload, also when `skipped`.
    pub payload_len: usize,
    /// The message was larger than the decoder's buffer: its payload was
    /// CRC-checked and dropped unread.
    pub skipped: bool,
}

/// How a stream ended, from [`EventStreamDecoder::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// On a message boundary.
    Clean,
    /// Inside a message.
    Truncated,
    /// Decoding had stopped on an error.
    Failed(DecodeError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between messages, or inside a prelude (its bytes in `buf`).
    Prelude,
    /// Collecting a message of `total` bytes (at most the buffer) in `buf`.
    Whole {
        total: usize,
    },
    /// Collecting the `head` (prelude and headers) bytes of a message too
    /// large to buffer in `buf`.
    Head {
        total: usize,
        head: usize,
    },
    /// Passing its payload: `pos` bytes of the message seen, `crc` theirs.
    Payload {
        total: usize,
        head: usize,
        pos: usize,
        crc: u32,
    },
    /// Collecting its 4-byte message CRC.
    Trailer {
        total: usize,
        head: usize,
        crc: u32,
        got: [u8; 4],
        n: usize,
    },
    Failed(DecodeError),
}

/// Incremental event-stream decoder with a fixed memory budget.
#[derive(Debug)]
pub struct EventStreamDecoder {
    buffer_bytes: usize,
    max_message: usize,
    buf: Vec<u8>,
    phase: Phase,
    messages: u64,
}

/// The string headers a [`Message`] reports.
#[derive(Default)]
struct Headers<'a> {
    event_type: Option<&'a str>,
    message_type: Option<&'a str>,
    content_type: Option<&'a str>,
    exception_type: Option<&'a str>,
    error_code: Option<&'a str>,
}

fn parse_headers(h: &[u8]) -> Result<Headers<'_>, DecodeError> {
    let mut out = Headers::default();
    let mut i = 0;
    while i < h.len() {
        let name_len = usize::from(*h.get(i).ok_or(DecodeError::BadHeaders)?);
        i += 1;
        let name = h.get(i..i + name_len).ok_or(DecodeError::BadHeaders)?;
        i += name_len;
        let ty = *h.get(i).ok_or(DecodeError::BadHeaders)?;
        i += 1;
        let value_len = match ty {
            0 | 1 => 0,
            2 => 1,
            3 => 2,
            4 => 4,
            5 | 8 => 8,
            9 => 16,
            TYPE_BYTES | TYPE_STRING => {
                let len = h.get(i..i + 2).ok_or(DecodeError::BadHeaders)?;
                i += 2;
                usize::from(u16::from_be_bytes([
                    *len.first().ok_or(DecodeError::BadHeaders)?,
                    *len.get(1).ok_or(DecodeError::BadHeaders)?,
                ]))
            }
            _ => return Err(DecodeError::BadHeaders),
        };
        let value = h.get(i..i + value_len).ok_or(DecodeError::BadHeaders)?;
        i += value_len;
        if ty == TYPE_STRING {
            // A value that is not UTF-8 is as good as absent.
            let text = std::str::from_utf8(value).ok();
            match name {
                b":event-type" => out.event_type = text,
                b":message-type" => out.message_type = text,
                b":content-type" => out.content_type = text,
                b":exception-type" => out.exception_type = text,
                b":error-code" => out.error_code = text,
                _ => {}
            }
        }
    }
    Ok(out)
}

/// The headers and payload of a whole message whose prelude was checked.
fn decode_whole(msg: &[u8]) -> Result<Message<'_>, DecodeError> {
    let total = msg.len();
    let headers_len = be32(msg, 4).ok_or(DecodeError::BadLength)? as usize;
    let body_end = total.checked_sub(4).ok_or(DecodeError::BadLength)?;
    let expected = be32(msg, body_end).ok_or(DecodeError::BadLength)?;
    let body = msg.get(..body_end).ok_or(DecodeError::BadLength)?;
    if crc32(body) != expected {
        return Err(DecodeError::MessageCrc);
    }
    let headers_end = PRELUDE_BYTES + headers_len;
    let headers = msg
        .get(PRELUDE_BYTES..headers_end)
        .ok_or(DecodeError::BadLength)?;
    let payload = msg
        .get(headers_end..body_end)
        .ok_or(DecodeError::BadLength)?;
    let h = parse_headers(headers)?;
    Ok(Message {
        event_type: h.event_type,
        message_type: h.message_type,
        content_type: h.content_type,
        exception_type: h.exception_type,
        error_code: h.error_code,
        payload,
        payload_len: payload.len(),
        skipped: false,
    })
}

impl EventStreamDecoder {
    /// A decoder whose retained heap stays within `buffer_bytes` (at least
    /// 16), failing on messages declared over [`MAX_MESSAGE_BYTES`].
    pub fn new(buffer_bytes: usize) -> Self {
        EventStreamDecoder {
            buffer_bytes: buffer_bytes.max(MIN_MESSAGE_BYTES),
            max_message: MAX_MESSAGE_BYTES,
            buf: Vec::new(),
            phase: Phase::Prelude,
            messages: 0,
        }
    }

    /// Set the hard cap of a message's declared length (at least 16).
    pub fn with_max_message(mut self, max_message_bytes: usize) -> Self {
        self.max_message = max_message_bytes.max(MIN_MESSAGE_BYTES);
        self
    }

    /// Why decoding stopped, if it did.
    pub fn error(&self) -> Option<DecodeError> {
        match self.phase {
            Phase::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Messages delivered so far.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Heap bytes held (at most the `buffer_bytes` budget).
    pub fn retained_bytes(&self) -> usize {
        self.buf.capacity()
    }

    /// End of stream: whether it ended on a message boundary.
    pub fn finish(&self) -> End {
        match self.phase {
            Phase::Failed(e) => End::Failed(e),
            Phase::Prelude if self.buf.is_empty() => End::Clean,
            _ => End::Truncated,
        }
    }

    fn fail(&mut self, e: DecodeError) {
        self.phase = Phase::Failed(e);
        self.buf = Vec::new();
    }

    /// Append to the carry-over buffer, growing it only as far as the bytes
    /// that arrived (callers never exceed the budget).
    fn carry(&mut self, bytes: &[u8]) {
        let need = self.buf.len().saturating_add(bytes.len());
        if need > self.buf.capacity() {
            let target = need
                .max(self.buf.capacity().saturating_mul(2))
                .max(64)
                .min(self.buffer_bytes.max(need));
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The declared total and headers lengths of a 12-byte prelude.
    fn check_prelude(&self, prelude: &[u8]) -> Result<(usize, usize), DecodeError> {
        let total = be32(prelude, 0).ok_or(DecodeError::BadLength)?;
        let headers = be32(prelude, 4).ok_or(DecodeError::BadLength)?;
        let crc = be32(prelude, 8).ok_or(DecodeError::BadLength)?;
        if crc32(prelude.get(..8).unwrap_or_default()) != crc {
            return Err(DecodeError::PreludeCrc);
        }
        let total_len = total as usize;
        if total_len > self.max_message {
            return Err(DecodeError::TooLarge { declared: total });
        }
        if total_len < MIN_MESSAGE_BYTES || headers as usize > total_len - MIN_MESSAGE_BYTES {
            return Err(DecodeError::BadLength);
        }
        Ok((total_len, headers as usize))
    }

    /// Feed bytes; whole messages are passed to `on_message`. Does nothing
    /// once decoding failed.
    pub fn feed<F: FnMut(&Message<'_>)>(&mut self, chunk: &[u8], mut on_message: F) {
        let mut rest = chunk;
        while !rest.is_empty() {
            match self.phase {
                Phase::Failed(_) => return,
                Phase::Prelude => {
                    let have = self.buf.len();
                    if have + rest.len() < PRELUDE_BYTES {
                        self.carry(rest);
                        return;
                    }
                    let checked = if have == 0 {
                        // Looked at in place; the phase below consumes it.
                        self.check_prelude(rest.get(..PRELUDE_BYTES).unwrap_or_default())
                    } else {
                        let (now, later) = rest.split_at(PRELUDE_BYTES - have);
                        self.carry(now);
                        rest = later;
                        let prelude = self.buf.get(..PRELUDE_BYTES).unwrap_or_default();
                        self.check_prelude(prelude)
                    };
                    let (total, headers) = match checked {
                        Ok(lengths) => lengths,
                        Err(e) => return self.fail(e),
                    };
                    let head = PRELUDE_BYTES + headers;
                    if total <= self.buffer_bytes {
                        if have == 0 && rest.len() >= total {
                            // Whole in the chunk: decoded in place.
                            let (msg, later) = rest.split_at(total);
                            match decode_whole(msg) {
                                Ok(m) => {
                                    self.messages += 1;
                                    on_message(&m);
                                }
                                Err(e) => return self.fail(e),
                            }
                            rest = later;
                            continue;
                        }
                        self.phase = Phase::Whole { total };
                    } else if head + 4 > self.buffer_bytes {
                        // Even its headers do not fit the budget.
                        return self.fail(DecodeError::TooLarge {
                            declared: total as u32,
                        });
                    } else {
                        self.phase = Phase::Head { total, head };
                    }
                }
                Phase::Whole { total } => {
                    let take = (total - self.buf.len()).min(rest.len());
                    let (now, later) = rest.split_at(take);
                    self.carry(now);
                    rest = later;
                    if self.buf.len() == total {
                        let buf = std::mem::take(&mut self.buf);
                        match decode_whole(&buf) {
                            Ok(m) => {
                                self.messages += 1;
                                on_message(&m);
                            }
                            Err(e) => return self.fail(e),
                        }
                        self.buf = buf;
                        self.buf.clear();
                        self.phase = Phase::Prelude;
                    }
                }
                Phase::Head { total, head } => {
                    let take = (head - self.buf.len()).min(rest.len());
                    let (now, later) = rest.split_at(take);
                    self.carry(now);
                    rest = later;
                    if self.buf.len() == head {
                        let crc = crc32(&self.buf);
                        self.phase = Phase::Payload {
                            total,
                            head,
                            pos: head,
                            crc,
                        };
                    }
                }
                Phase::Payload {
                    total,
                    head,
                    pos,
                    crc,
                } => {
                    let take = (total - 4 - pos).min(rest.len());
                    let (now, later) = rest.split_at(take);
                    rest = later;
                    let crc = crc32_update(crc, now);
                    let pos = pos + take;
                    self.phase = if pos == total - 4 {
                        Phase::Trailer {
                            total,
                            head,
                            crc,
                            got: [0; 4],
                            n: 0,
                        }
                    } else {
                        Phase::Payload {
                            total,
                            head,
                            pos,
                            crc,
                        }
                    };
                }
                Phase::Trailer {
                    total,
                    head,
                    crc,
                    mut got,
                    mut n,
                } => {
                    while n < 4 {
                        let Some((&b, later)) = rest.split_first() else {
                            break;
                        };
                        if let Some(slot) = got.get_mut(n) {
                            *slot = b;
                        }
                        n += 1;
                        rest = later;
                    }
                    if n < 4 {
                        self.phase = Phase::Trailer {
                            total,
                            head,
                            crc,
                            got,
                            n,
                        };
                        return;
                    }
                    if u32::from_be_bytes(got) != crc {
                        return self.fail(DecodeError::MessageCrc);
                    }
                    let headers = match parse_headers(
                        self.buf.get(PRELUDE_BYTES..head).unwrap_or_default(),
                    ) {
                        Ok(h) => h,
                        Err(e) => return self.fail(e),
                    };
                    self.messages += 1;
                    on_message(&Message {
                        event_type: headers.event_type,
                        message_type: headers.message_type,
                        content_type: headers.content_type,
                        exception_type: headers.exception_type,
                        error_code: headers.error_code,
                        payload: &[],
                        payload_len: total - head - 4,
                        skipped: true,
                    });
                    self.buf.clear();
                    self.phase = Phase::Prelude;
                }
            }
        }
    }
}

/// Test helpers: frames built with the decoder's own CRC.
#[cfg(test)]
pub(crate) mod frame {
    use super::crc32;

    /// A header value of any type.
    #[derive(Debug, Clone)]
    pub enum Value<'a> {
        True,
        False,
        Byte(u8),
        Short(i16),
        Int(i32),
        Long(i64),
        Bytes(&'a [u8]),
        Str(&'a str),
        Timestamp(i64),
        Uuid([u8; 16]),
    }

    /// One message with the given headers and payload.
    pub fn message(headers: &[(&str, Value<'_>)], payload: &[u8]) -> Vec<u8> {
        let mut h = Vec::new();
        for (name, value) in headers {
            h.push(name.len() as u8);
            h.extend_from_slice(name.as_bytes());
            match value {
                Value::True => h.push(0),
                Value::False => h.push(1),
                Value::Byte(b) => {
                    h.push(2);
                    h.push(*b);
                }
                Value::Short(v) => {
                    h.push(3);
                    h.extend_from_slice(&v.to_be_bytes());
                }
                Value::Int(v) => {
                    h.push(4);
                    h.extend_from_slice(&v.to_be_bytes());
                }
                Value::Long(v) => {
                    h.push(5);
                    h.extend_from_slice(&v.to_be_bytes());
                }
                Value::Bytes(b) => {
                    h.push(6);
                    h.extend_from_slice(&(b.len() as u16).to_be_bytes());
                    h.extend_from_slice(b);
                }
                Value::Str(s) => {
                    h.push(7);
                    h.extend_from_slice(&(s.len() as u16).to_be_bytes());
                    h.extend_from_slice(s.as_bytes());
                }
                Value::Timestamp(v) => {
                    h.push(8);
                    h.extend_from_slice(&v.to_be_bytes());
                }
                Value::Uuid(u) => {
                    h.push(9);
                    h.extend_from_slice(u);
                }
            }
        }
        raw(&h, payload)
    }

    /// A message from already encoded headers.
    pub fn raw(headers: &[u8], payload: &[u8]) -> Vec<u8> {
        let total = (12 + headers.len() + payload.len() + 4) as u32;
        let mut m = Vec::with_capacity(total as usize);
        m.extend_from_slice(&total.to_be_bytes());
        m.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        let prelude_crc = crc32(&m);
        m.extend_from_slice(&prelude_crc.to_be_bytes());
        m.extend_from_slice(headers);
        m.extend_from_slice(payload);
        let crc = crc32(&m);
        m.extend_from_slice(&crc.to_be_bytes());
        m
    }

    /// An `event` message as Bedrock sends them.
    pub fn event(event_type: &str, payload: &[u8]) -> Vec<u8> {
        message(
            &[
                (":event-type", Value::Str(event_type)),
                (":content-type", Value::Str("application/json")),
                (":message-type", Value::Str("event")),
            ],
            payload,
        )
    }

    /// An `exception` message as Bedrock sends them.
    pub fn exception(exception_type: &str, payload: &[u8]) -> Vec<u8> {
        message(
            &[
                (":exception-type", Value::Str(exception_type)),
                (":content-type", Value::Str("application/json")),
                (":message-type", Value::Str("exception")),
            ],
            payload,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::frame::{self, Value};
    use super::*;

    /// An owned copy of a [`Message`].
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Owned {
        event_type: Option<String>,
        message_type: Option<String>,
        content_type: Option<String>,
        exception_type: Option<String>,
        error_code: Option<String>,
        payload: Vec<u8>,
        payload_len: usize,
        skipped: bool,
    }

    impl From<&Message<'_>> for Owned {
        fn from(m: &Message<'_>) -> Self {
            let s = |v: Option<&str>| v.map(str::to_owned);
            Owned {
                event_type: s(m.event_type),
                message_type: s(m.message_type),
                content_type: s(m.content_type),
                exception_type: s(m.exception_type),
                error_code: s(m.error_code),
                payload: m.payload.to_vec(),
                payload_len: m.payload_len,
                skipped: m.skipped,
            }
        }
    }

    fn decode_chunks<'a>(
        mut d: EventStreamDecoder,
        chunks: impl IntoIterator<Item = &'a [u8]>,
        bound: usize,
    ) -> (Vec<Owned>, End) {
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c, |m| out.push(Owned::from(m)));
            assert!(d.retained_bytes() <= bound, "{}", d.retained_bytes());
        }
        (out, d.finish())
    }

    fn every_header_type() -> Vec<u8> {
        frame::message(
            &[
                ("flag-t", Value::True),
                ("flag-f", Value::False),
                ("b", Value::Byte(7)),
                ("s", Value::Short(-2)),
                ("i", Value::Int(1 << 20)),
                ("l", Value::Long(-5)),
                ("raw", Value::Bytes(b"\x00\x01:event-type")),
                (":event-type", Value::Str("metadata")),
                ("ts", Value::Timestamp(1_750_000_000_000)),
                ("id", Value::Uuid([0xAB; 16])),
                (":message-type", Value::Str("event")),
                (":content-type", Value::Str("application/json")),
            ],
            br#"{"usage":{"inputTokens":1}}"#,
        )
    }

    /// Three ordinary messages, one with every header type, an exception.
    fn stream() -> Vec<u8> {
        let mut s = Vec::new();
        s.extend(frame::event("messageStart", br#"{"role":"assistant"}"#));
        s.extend(every_header_type());
        s.extend(frame::event(
            "contentBlockDelta",
            "{\"contentBlockIndex\":0,\"delta\":{\"text\":\"h\u{e9}\"}}".as_bytes(),
        ));
        s.extend(frame::message(&[], b""));
        s.extend(frame::exception(
            "throttlingException",
            br#"{"message":"slow down"}"#,
        ));
        s
    }

    #[test]
    fn crc32_is_the_ieee_one() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
        assert_eq!(crc32_update(crc32(b"1234"), b"56789"), 0xCBF4_3926);
    }

    #[test]
    fn decodes_every_header_type() {
        let (msgs, end) = decode_chunks(EventStreamDecoder::new(4096), [&stream()[..]], 4096);
        assert_eq!(end, End::Clean);
        assert_eq!(msgs.len(), 5);
        assert_eq!(msgs[0].event_type.as_deref(), Some("messageStart"));
        assert_eq!(msgs[0].message_type.as_deref(), Some("event"));
        assert_eq!(msgs[0].content_type.as_deref(), Some("application/json"));
        assert_eq!(msgs[0].payload, br#"{"role":"assistant"}"#);
        let m = &msgs[1];
        assert_eq!(m.event_type.as_deref(), Some("metadata"));
        assert_eq!(m.message_type.as_deref(), Some("event"));
        assert_eq!(m.content_type.as_deref(), Some("application/json"));
        assert_eq!(m.payload, br#"{"usage":{"inputTokens":1}}"#);
        assert_eq!(msgs[3].event_type, None);
        assert_eq!(msgs[3].payload, b"");
        assert_eq!(msgs[4].message_type.as_deref(), Some("exception"));
        assert_eq!(
            msgs[4].exception_type.as_deref(),
            Some("throttlingException")
        );
    }

    #[test]
    fn every_split_and_byte_by_byte_give_the_same_messages() {
        let s = stream();
        let (whole, end) = decode_chunks(EventStreamDecoder::new(4096), [&s[..]], 4096);
        assert_eq!(end, End::Clean);
        for at in 0..=s.len() {
            let (a, b) = s.split_at(at);
            let (got, end) = decode_chunks(EventStreamDecoder::new(4096), [a, b], 4096);
            assert_eq!(got, whole, "split at {at}");
            assert_eq!(end, End::Clean);
        }
        let (got, end) = decode_chunks(EventStreamDecoder::new(4096), s.chunks(1), 4096);
        assert_eq!(got, whole);
        assert_eq!(end, End::Clean);
        // Three-way splits around the messages' edges.
        for at in (0..s.len()).step_by(7) {
            for len in [1, 5, 11, 12, 13, 40] {
                let end2 = (at + len).min(s.len());
                let (got, _) = decode_chunks(
                    EventStreamDecoder::new(4096),
                    [&s[..at], &s[at..end2], &s[end2..]],
                    4096,
                );
                assert_eq!(got, whole, "split at {at}+{len}");
            }
        }
    }

    #[test]
    fn messages_over_the_buffer_are_checked_and_skipped_in_any_chunking() {
        let big = "x".repeat(5000);
        let mut s = frame::event("contentBlockDelta", big.as_bytes());
        s.extend(frame::event("metadata", br#"{"usage":{}}"#));
        let budget = 1024;
        let (whole, end) = decode_chunks(EventStreamDecoder::new(budget), [&s[..]], budget);
        assert_eq!(end, End::Clean);
        assert_eq!(whole.len(), 2);
        assert!(whole[0].skipped);
        assert_eq!(whole[0].payload, b"");
        assert_eq!(whole[0].payload_len, 5000);
        assert_eq!(whole[0].event_type.as_deref(), Some("contentBlockDelta"));
        assert!(!whole[1].skipped);
        assert_eq!(whole[1].payload, br#"{"usage":{}}"#);
        for at in 0..=s.len() {
            let (a, b) = s.split_at(at);
            let (got, end) = decode_chunks(EventStreamDecoder::new(budget), [a, b], budget);
            assert_eq!(got, whole, "split at {at}");
            assert_eq!(end, End::Clean);
        }
        let (got, _) = decode_chunks(EventStreamDecoder::new(budget), s.chunks(1), budget);
        assert_eq!(got, whole);
        // A corrupted payload byte of a skipped message is still caught.
        let mut bad = s.clone();
        bad[3000] ^= 1;
        for chunk in [bad.len(), 333, 1] {
            let (got, end) =
                decode_chunks(EventStreamDecoder::new(budget), bad.chunks(chunk), budget);
            assert!(got.is_empty());
            assert_eq!(end, End::Failed(DecodeError::MessageCrc));
        }
    }

    #[test]
    fn bad_prelude_crc_fails_and_stops() {
        let mut s = stream();
        let second = frame::event("messageStart", br#"{"role":"assistant"}"#).len();
        s[second + 9] ^= 0x40; // the second message's prelude CRC
        for chunk in [s.len(), 10, 1] {
            let mut d = EventStreamDecoder::new(4096);
            let mut got = Vec::new();
            for c in s.chunks(chunk) {
                d.feed(c, |m| got.push(Owned::from(m)));
            }
            assert_eq!(got.len(), 1, "chunk {chunk}");
            assert_eq!(d.error(), Some(DecodeError::PreludeCrc));
            assert_eq!(d.finish(), End::Failed(DecodeError::PreludeCrc));
            assert_eq!(d.retained_bytes(), 0);
            // Nothing more is decoded, even valid messages.
            d.feed(&frame::event("metadata", b"{}"), |_| panic!("decoded"));
        }
    }

    #[test]
    fn bad_message_crc_fails() {
        let mut s = frame::event("metadata", br#"{"usage":{"inputTokens":5}}"#);
        let last = s.len() - 1;
        s[last] ^= 1;
        for chunk in [s.len(), 3, 1] {
            let (got, end) = decode_chunks(EventStreamDecoder::new(4096), s.chunks(chunk), 4096);
            assert!(got.is_empty());
            assert_eq!(end, End::Failed(DecodeError::MessageCrc));
        }
        // A payload byte changed (the prelude still checks).
        let mut s = frame::event("metadata", br#"{"usage":{"inputTokens":5}}"#);
        s[60] ^= 0x20;
        let (got, end) = decode_chunks(EventStreamDecoder::new(4096), [&s[..]], 4096);
        assert!(got.is_empty());
        assert_eq!(end, End::Failed(DecodeError::MessageCrc));
    }

    fn prelude(total: u32, headers: u32) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&headers.to_be_bytes());
        let crc = crc32(&p);
        p.extend_from_slice(&crc.to_be_bytes());
        p
    }

    #[test]
    fn a_declared_two_gib_message_is_refused_without_buffering() {
        let mut s = prelude(0x8000_0000, 0);
        s.extend(vec![b'a'; 100_000]);
        for chunk in [s.len(), 4096, 12, 5] {
            let mut d = EventStreamDecoder::new(4096);
            let mut n = 0;
            for c in s.chunks(chunk) {
                d.feed(c, |_| n += 1);
                assert!(d.retained_bytes() <= 64);
            }
            assert_eq!(n, 0);
            assert_eq!(
                d.finish(),
                End::Failed(DecodeError::TooLarge {
                    declared: 0x8000_0000
                })
            );
        }
        // u32::MAX too; and a configured cap.
        let (_, end) = decode_chunks(EventStreamDecoder::new(64), [&prelude(u32::MAX, 0)[..]], 64);
        assert_eq!(
            end,
            End::Failed(DecodeError::TooLarge { declared: u32::MAX })
        );
        let m = frame::event("metadata", &[b'x'; 200]);
        let d = EventStreamDecoder::new(4096).with_max_message(100);
        let (_, end) = decode_chunks(d, [&m[..]], 4096);
        assert_eq!(
            end,
            End::Failed(DecodeError::TooLarge {
                declared: m.len() as u32
            })
        );
        // Headers larger than the buffer cannot be streamed either.
        let long = "h".repeat(600);
        let m = frame::message(&[(":event-type", Value::Str(&long))], b"{}");
        let (_, end) = decode_chunks(EventStreamDecoder::new(256), m.chunks(100), 256);
        assert!(matches!(end, End::Failed(DecodeError::TooLarge { .. })));
    }

    #[test]
    fn lengths_that_lie_fail() {
        // Headers length larger than the total allows.
        let mut m = prelude(40, 30);
        m.extend(vec![0; 28]);
        let (_, end) = decode_chunks(EventStreamDecoder::new(4096), [&m[..]], 4096);
        assert_eq!(end, End::Failed(DecodeError::BadLength));
        let (_, end) = decode_chunks(EventStreamDecoder::new(4096), [&prelude(16, 1)[..]], 4096);
        assert_eq!(end, End::Failed(DecodeError::BadLength));
        let (_, end) = decode_chunks(
            EventStreamDecoder::new(4096),
            [&prelude(100, u32::MAX)[..]],
            4096,
        );
        assert_eq!(end, End::Failed(DecodeError::BadLength));
        // Total under the 16-byte minimum.
        for total in [0, 1, 12, 15] {
            let (_, end) = decode_chunks(
                EventStreamDecoder::new(4096),
                [&prelude(total, 0)[..]],
                4096,
            );
            assert_eq!(end, End::Failed(DecodeError::BadLength), "{total}");
        }
        // The empty message is fine.
        let (got, end) = decode_chunks(
            EventStreamDecoder::new(4096),
            [&frame::raw(&[], &[])[..]],
            4096,
        );
        assert_eq!((got.len(), end), (1, End::Clean));
        // A header whose string length runs past the headers section.
        let mut h = vec![3];
        h.extend_from_slice(b"abc");
        h.push(7);
        h.extend_from_slice(&500u16.to_be_bytes());
        h.extend_from_slice(b"short");
        let m = frame::raw(&h, b"{}");
        let (got, end) = decode_chunks(EventStreamDecoder::new(4096), [&m[..]], 4096);
        assert!(got.is_empty());
        assert_eq!(end, End::Failed(DecodeError::BadHeaders));
        // A name length past the section, an unknown type, a cut value.
        for h in [
            vec![9, b'a'],
            vec![1, b'a', 10],
            vec![1, b'a', 5, 0, 0],
            vec![1, b'a'],
            vec![1, b'a', 7, 0],
        ] {
            let m = frame::raw(&h, b"");
            let (_, end) = decode_chunks(EventStreamDecoder::new(4096), m.chunks(3), 4096);
            assert_eq!(end, End::Failed(DecodeError::BadHeaders), "{h:?}");
            // Also when streamed (larger than the buffer).
            let m = frame::raw(&h, &[b'z'; 300]);
            let (_, end) = decode_chunks(EventStreamDecoder::new(64), m.chunks(7), 64);
            assert_eq!(end, End::Failed(DecodeError::BadHeaders), "{h:?}");
        }
    }

    #[test]
    fn truncated_streams() {
        let s = stream();
        let (whole, _) = decode_chunks(EventStreamDecoder::new(4096), [&s[..]], 4096);
        let first = frame::event("messageStart", br#"{"role":"assistant"}"#).len();
        for cut in [1, 5, 11, 12, 13, first - 1, first + 3, s.len() - 1] {
            let (got, end) = decode_chunks(EventStreamDecoder::new(4096), s[..cut].chunks(4), 4096);
            assert_eq!(end, End::Truncated, "cut {cut}");
            assert_eq!(got, whole[..got.len()]);
        }
        let (got, end) = decode_chunks(EventStreamDecoder::new(4096), [&s[..first]], 4096);
        assert_eq!((got.len(), end), (1, End::Clean));
        let (_, end) = decode_chunks(EventStreamDecoder::new(4096), [], 4096);
        assert_eq!(end, End::Clean);
        // Inside a streamed message (payload and trailer).
        let big = frame::event("chunk", &[b'q'; 3000]);
        for cut in [20, 1000, big.len() - 2] {
            let (got, end) =
                decode_chunks(EventStreamDecoder::new(512), big[..cut].chunks(100), 512);
            assert!(got.is_empty());
            assert_eq!(end, End::Truncated, "cut {cut}");
        }
    }

    #[test]
    fn carry_over_grows_with_arrived_bytes_only() {
        // A 900-byte message arriving 10 bytes at a time: the buffer never
        // holds much more than what arrived.
        let m = frame::event("metadata", &[b'y'; 850]);
        let mut d = EventStreamDecoder::new(16 * 1024);
        let mut fed = 0;
        for c in m.chunks(10) {
            d.feed(c, |_| {});
            fed += c.len();
            if fed < m.len() {
                assert!(d.retained_bytes() <= (2 * fed).max(64), "{fed}");
            }
        }
        assert_eq!(d.messages(), 1);
    }
}
