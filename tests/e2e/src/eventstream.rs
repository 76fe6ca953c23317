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
