//! AWS event-stream framing (`application/vnd.amazon.eventstream`), which Bedrock's
//! ConverseStream and InvokeModelWithResponseStream answer in: a stream of binary
//! messages, each
//!
//! ```text
//! total length (u32 BE) | headers length (u32 BE) | prelude CRC32 (of the 8 bytes before)
//! headers: name length (u8), name, value type (u8), value …
//! payload
//! message CRC32 (of everything before it)
//! ```
//!
//! keygate relays the bytes unchanged and reads usage from them on the way: the
//! `metadata` event of ConverseStream (`usage.inputTokens` / `outputTokens`), and the
//! `chunk` events of InvokeModelWithResponseStream (base64 `bytes` of the model's own
//! JSON, whose last carries `amazon-bedrock-invocationMetrics`).
//!
//! Pure functions, so they can be fuzzed on their own.

/// Bytes of a message's prelude.
pub const PRELUDE: usize = 12;
/// The largest message keygate reads (AWS caps messages at 16 MiB).
pub const MAX_MESSAGE: usize = 16 << 20;

/// One decoded message. Only string headers are kept (the ones Bedrock sends:
/// `:event-type`, `:message-type`, `:content-type`, `:exception-type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    pub headers: Vec<(&'a str, &'a str)>,
    pub payload: &'a [u8],
}

impl Message<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}

/// Why bytes are not an event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A length out of range (shorter than its own framing, or larger than [`MAX_MESSAGE`]).
    Length,
    /// The prelude's or the message's CRC32 does not match.
    Checksum,
    /// A header that runs past its section, or of an unknown type.
    Header,
}

/// The length of the message at the start of `buffer`, once its prelude has arrived
/// and checks out; `Ok(None)` while fewer than 12 bytes are there.
pub fn message_len(buffer: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(prelude) = buffer.get(..PRELUDE) else { return Ok(None) };
    let total = be32(&prelude[0..4]) as usize;
    let headers = be32(&prelude[4..8]) as usize;
    if be32(&prelude[8..12]) != crc32(&prelude[..8]) {
        return Err(FrameError::Checksum);
    }
    if total < PRELUDE + 4 + headers || total > MAX_MESSAGE {
        return Err(FrameError::Length);
    }
    Ok(Some(total))
}

/// Decodes the whole message `frame` (exactly one message's bytes), checking both CRCs.
pub fn decode(frame: &[u8]) -> Result<Message<'_>, FrameError> {
    let total = message_len(frame)?.ok_or(FrameError::Length)?;
    if frame.len() != total {
        return Err(FrameError::Length);
    }
    let (body, crc) = frame.split_at(total - 4);
    if be32(crc) != crc32(body) {
        return Err(FrameError::Checksum);
    }
    let headers_len = be32(&frame[4..8]) as usize;
    let mut rest = &frame[PRELUDE..PRELUDE + headers_len];
    let payload = &frame[PRELUDE + headers_len..total - 4];
    let mut headers = Vec::new();
    while let Some((&name_len, after)) = rest.split_first() {
        let name_len = usize::from(name_len);
        let name = after.get(..name_len).ok_or(FrameError::Header)?;
        let name = std::str::from_utf8(name).map_err(|_| FrameError::Header)?;
        let (&kind, after) = after.get(name_len..).and_then(<[u8]>::split_first).ok_or(FrameError::Header)?;
        let fixed = match kind {
            0 | 1 => Some(0),
            2 => Some(1),
            3 => Some(2),
            4 => Some(4),
            5 | 8 => Some(8),
            9 => Some(16),
            6 | 7 => None,
            _ => return Err(FrameError::Header),
        };
        rest = match fixed {
            Some(n) => after.get(n..).ok_or(FrameError::Header)?,
            None => {
                let len = usize::from(u16::from_be_bytes([
                    *after.first().ok_or(FrameError::Header)?,
                    *after.get(1).ok_or(FrameError::Header)?,
                ]));
                let value = after.get(2..2 + len).ok_or(FrameError::Header)?;
                if kind == 7 {
                    headers.push((name, std::str::from_utf8(value).map_err(|_| FrameError::Header)?));
                }
                &after[2 + len..]
            }
        };
    }
    Ok(Message { headers, payload })
}

/// Encodes a message with string headers (what keygate writes when it must rewrite one).
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut head = Vec::new();
    for (name, value) in headers {
        head.push(name.len().min(255) as u8);
        head.extend_from_slice(&name.as_bytes()[..name.len().min(255)]);
        head.push(7);
        let value = &value.as_bytes()[..value.len().min(u16::MAX as usize)];
        head.extend_from_slice(&(value.len() as u16).to_be_bytes());
        head.extend_from_slice(value);
    }
    let total = PRELUDE + head.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(head.len() as u32).to_be_bytes());
    let prelude_crc = crc32(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(payload);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// The JSON document a Bedrock event carries, for the usage reader: a `metadata` or
/// other ConverseStream event's payload as it is; a `chunk` event's base64 `bytes`
/// decoded (InvokeModelWithResponseStream). `None` for exceptions and anything else.
pub fn bedrock_document(message: &Message<'_>) -> Option<Vec<u8>> {
    if message.header(":message-type").is_some_and(|t| t != "event") {
        return None;
    }
    if message.header(":event-type") == Some("chunk") {
        #[derive(serde::Deserialize)]
        struct Chunk {
            bytes: String,
        }
        let chunk: Chunk = serde_json::from_slice(message.payload).ok()?;
        return base64_decode(&chunk.bytes);
    }
    Some(message.payload.to_vec())
}

/// Standard base64 (padding optional); `None` for anything else.
pub fn base64_decode(input: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let (mut buffer, mut bits) = (0u32, 0);
    for c in input.bytes().filter(|c| *c != b'=') {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn be32(bytes: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[..4]);
    u32::from_be_bytes(b)
}

/// CRC-32 (IEEE 802.3, as zlib computes it): the checksum event-stream messages carry.
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_the_ieee_one() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn messages_round_trip_and_damage_is_caught() {
        let frame = encode(
            &[(":event-type", "metadata"), (":content-type", "application/json"), (":message-type", "event")],
            br#"{"usage":{"inputTokens":3,"outputTokens":4}}"#,
        );
        assert_eq!(message_len(&frame[..11]), Ok(None));
        assert_eq!(message_len(&frame), Ok(Some(frame.len())));
        let m = decode(&frame).unwrap();
        assert_eq!(m.header(":event-type"), Some("metadata"));
        assert_eq!(bedrock_document(&m).unwrap(), m.payload);
        let mut bad = frame.clone();
        let last = bad.len() - 6;
        bad[last] ^= 1;
        assert_eq!(decode(&bad), Err(FrameError::Checksum));
        bad = frame.clone();
        bad[2] ^= 1;
        assert_eq!(message_len(&bad), Err(FrameError::Checksum));
        assert_eq!(decode(&frame[..frame.len() - 1]), Err(FrameError::Length));
    }

    #[test]
    fn an_empty_message_from_the_aws_event_stream_test_suite_decodes() {
        // aws-c-event-stream's `encoded/positive/empty_message`: 16 bytes, no headers.
        let frame = [0, 0, 0, 0x10, 0, 0, 0, 0, 0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98, 0xc8, 0xff];
        let m = decode(&frame).unwrap();
        assert!(m.headers.is_empty() && m.payload.is_empty());
        assert_eq!(encode(&[], b""), frame);
    }

    #[test]
    fn chunk_events_carry_base64_documents() {
        let frame =
            encode(&[(":event-type", "chunk"), (":message-type", "event")], br#"{"bytes":"eyJhIjoxfQ==","p":"abc"}"#);
        assert_eq!(bedrock_document(&decode(&frame).unwrap()).unwrap(), br#"{"a":1}"#);
        let exception = encode(&[(":message-type", "exception")], b"{}");
        assert!(bedrock_document(&decode(&exception).unwrap()).is_none());
        assert_eq!(base64_decode("aGk").unwrap(), b"hi");
        assert!(base64_decode("a b").is_none());
    }
}
