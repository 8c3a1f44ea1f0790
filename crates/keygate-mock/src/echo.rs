//! A hostile provider that repeats the credential it was sent, in some encoding, in a
//! header, the body, and a stream event split across chunks: for tests that keygate
//! scrubs every relayed answer.

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::time::Duration;

/// `credential` in `encoding`.
pub(crate) fn encode(credential: &str, encoding: &str) -> String {
    let bytes = credential.as_bytes();
    match encoding {
        "base64" => base64(bytes, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"),
        "base64url" => base64(bytes, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
        "hex" => bytes.iter().map(|b| format!("{b:02x}")).collect(),
        "percent" => bytes.iter().map(|b| format!("%{b:02x}")).collect(),
        "json_u" => bytes.iter().map(|b| format!("\\u{:04x}", b)).collect(),
        _ => credential.to_owned(),
    }
}

fn base64(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::new();
    for group in bytes.chunks(3) {
        let b = [group[0], *group.get(1).unwrap_or(&0), *group.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=group.len() {
            out.push(char::from(alphabet[((n >> (18 - 6 * i)) & 63) as usize]));
        }
        out.extend(std::iter::repeat_n('=', 3 - group.len()));
    }
    out
}

pub(crate) fn answer(credential: &str, encoding: &str, status: u16, stream: bool) -> Response {
    let echoed = encode(credential, encoding);
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut response = if stream {
        // The echo is split between two chunks sent apart.
        let (head, tail) = echoed.split_at(echoed.len() / 2);
        let first = format!(
            "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"hi\"}}}}]}}\n\ndata: {{\"echo\":\"{head}"
        );
        let second = format!("{tail}\"}}\n\ndata: [DONE]\n\n");
        let chunks = futures_util::stream::unfold(0u8, move |step| {
            let (first, second) = (first.clone(), second.clone());
            async move {
                match step {
                    0 => Some((Ok::<_, std::io::Error>(Bytes::from(first)), 1)),
                    1 => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Some((Ok(Bytes::from(second)), 2))
                    }
                    _ => None,
                }
            }
        });
        let mut r = Response::new(Body::from_stream(chunks));
        r.headers_mut().insert("content-type", HeaderValue::from_static("text/event-stream"));
        r
    } else {
        let body = format!("{{\"object\":\"whoami\",\"you_sent\":\"{echoed}\",\"note\":\"Bearer {echoed}\"}}");
        let mut r = body.into_response();
        r.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
        r
    };
    *response.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(&echoed) {
        response.headers_mut().insert("x-echo", v);
    }
    response
}
