//! The AWS event-stream framing (`application/vnd.amazon.eventstream`) as
//! Bedrock's streaming APIs send it, for the demo upstream and the tests:
//! total length, headers length, prelude CRC32, string headers, payload,
//! message CRC32 (all big-endian).

/// One message with `:event-type`, `:content-type` and `:message-type`
/// headers (string-typed, as Bedrock sends them).
pub fn frame(message_type: &str, event_type: &str, payload: &[u8]) -> Vec<u8> {
    let type_header = if message_type == "exception" {
        ":exception-type"
    } else {
        ":event-type"
    };
    let mut headers = Vec::new();
    for (name, value) in [
        (type_header, event_type),
        (":content-type", "application/json"),
        (":message-type", message_type),
    ] {
        headers.push(name.len() as u8);
        headers.extend_from_slice(name.as_bytes());
        headers.push(7); // string
        headers.extend_from_slice(&(value.len() as u16).to_be_bytes());
        headers.extend_from_slice(value.as_bytes());
    }
    let total = 12 + headers.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&headers);
    out.extend_from_slice(payload);
    let message_crc = crc32fast::hash(&out);
    out.extend_from_slice(&message_crc.to_be_bytes());
    out
}

/// An `event` message.
pub fn event(event_type: &str, payload: &serde_json::Value) -> Vec<u8> {
    frame("event", event_type, payload.to_string().as_bytes())
}

/// The prelude of a message declaring `total` bytes with `headers` bytes
/// of headers, with a correct prelude CRC (so only the lengths lie).
pub fn prelude(total: u32, headers: u32) -> Vec<u8> {
    let mut out = Vec::from(total.to_be_bytes());
    out.extend_from_slice(&headers.to_be_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// A stream of `frames` damaged the way `fault` names, for hostile-input
/// tests: `crc` (a payload byte flipped in the second frame), `prelude-crc`
/// (the first frame's length changed under its CRC), `huge` (a message
/// declaring 2 GiB after the first frame), `lying-headers` (a headers
/// length past the message's end). `None` for an unknown name.
pub fn damaged(frames: &[Vec<u8>], fault: &str) -> Option<Vec<u8>> {
    let first = frames.first()?.clone();
    let rest: Vec<u8> = frames.iter().skip(1).flatten().copied().collect();
    let mut out = first.clone();
    match fault {
        "crc" => {
            let second = frames.get(1)?;
            let mut second = second.clone();
            let at = second.len() - 8;
            second[at] ^= 0x20;
            out.extend(second);
            out.extend(frames.iter().skip(2).flatten());
        }
        "prelude-crc" => {
            out[3] ^= 0x01;
            out.extend(rest);
        }
        "huge" => {
            out.extend(prelude(0x8000_0000, 0));
            out.extend(std::iter::repeat_n(0u8, 4096));
            out.extend(rest);
        }
        "lying-headers" => {
            out.extend(prelude(64, 60));
            out.extend(std::iter::repeat_n(0u8, 52));
            out.extend(rest);
        }
        _ => return None,
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_carries_its_lengths_and_checksums() {
        let f = event("metadata", &serde_json::json!({"usage": {}}));
        let total = u32::from_be_bytes(f[0..4].try_into().unwrap()) as usize;
        assert_eq!(total, f.len());
        let prelude = u32::from_be_bytes(f[8..12].try_into().unwrap());
        assert_eq!(prelude, crc32fast::hash(&f[..8]));
        let message = u32::from_be_bytes(f[total - 4..].try_into().unwrap());
        assert_eq!(message, crc32fast::hash(&f[..total - 4]));
        // The CRC is the IEEE one: "123456789" → 0xCBF43926.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
    }
}
