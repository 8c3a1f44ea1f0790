//! [`Framed`]: a Bedrock event stream (`application/vnd.amazon.eventstream`: ConverseStream,
//! InvokeModelWithResponseStream) on its way to the caller, relayed message by message,
//! byte for byte, with usage read on the way (ConverseStream's `metadata` event, or the
//! invocation metrics of InvokeModel's last chunk). A message that carries a form of the
//! call's secrets is re-framed with its payload scrubbed (new lengths and CRCs); one whose
//! headers carry it is dropped. Bytes that are not an event stream end the relay (they
//! are not passed on unread). Settled like [`super::sse::Metered`]: what passed is
//! recorded, estimated when the provider never said.

use super::settle::Finish;
use axum::body::Bytes;
use futures_util::Stream;
use keygate_core::eventstream;
use keygate_core::usage::{Dialect, Report, Tokens};
use keygate_vault::echo::EchoScrubber;
use keygate_vault::redact::scrub;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

type Upstream = super::client::BodyStream;

pub(crate) struct Framed {
    inner: Upstream,
    echo: Option<Arc<EchoScrubber>>,
    buffer: Vec<u8>,
    pending: VecDeque<Bytes>,
    tokens: Tokens,
    text_bytes: usize,
    ended: bool,
    done: bool,
    /// Why the relay must end with an error, after the pending messages.
    failure: Option<&'static str>,
    finish: Option<Finish>,
}

impl Framed {
    pub fn new(inner: Upstream, echo: Option<Arc<EchoScrubber>>, finish: Finish) -> Self {
        Self {
            inner,
            echo,
            buffer: Vec::new(),
            pending: VecDeque::new(),
            tokens: Tokens::default(),
            text_bytes: 0,
            ended: false,
            done: false,
            failure: None,
            finish: Some(finish),
        }
    }

    /// Moves every whole message out of the buffer. `Err` when the bytes are not an
    /// event stream.
    fn take_messages(&mut self) -> Result<(), eventstream::FrameError> {
        while let Some(len) = eventstream::message_len(&self.buffer)? {
            if self.buffer.len() < len {
                return Ok(());
            }
            let frame: Vec<u8> = self.buffer.drain(..len).collect();
            let message = eventstream::decode(&frame)?;
            if let Some(report) = eventstream::bedrock_document(&message).and_then(|doc| Report::parse(&doc)) {
                self.tokens.observe(Dialect::Bedrock, &report);
                self.text_bytes += report.text_bytes();
            }
            if let Some(bytes) = relayed(&frame, &message, self.echo.as_deref()) {
                self.pending.push_back(Bytes::from(bytes));
            }
        }
        Ok(())
    }

    fn complete(&mut self) {
        if let Some(mut finish) = self.finish.take() {
            let mut tokens = self.tokens;
            if !(self.ended && tokens.final_report) {
                tokens.estimate_unreported(finish.request_bytes, self.text_bytes);
            }
            finish.settle(tokens);
        }
    }

    /// Ends the relay with an error once what was whole before it has gone out.
    fn broken(&mut self, why: &'static str) {
        self.buffer.clear();
        self.failure = Some(why);
    }
}

/// What goes on of one frame: as it came, rewritten with its payload scrubbed, or nothing
/// (a key in a header, or split between a header and the payload: re-encoded, the two
/// lie side by side again, so such a frame is dropped rather than relayed).
fn relayed(frame: &[u8], message: &eventstream::Message<'_>, echo: Option<&EchoScrubber>) -> Option<Vec<u8>> {
    let Some(echo) = echo.filter(|e| e.found_in(frame)) else {
        return Some(frame.to_vec());
    };
    let head_clean = message.headers.iter().all(|(n, v)| !echo.found_in(format!("{n}{v}").as_bytes()));
    let encoded = head_clean.then(|| eventstream::encode(&message.headers, &echo.scrub(message.payload)))?;
    (!echo.found_in(&encoded)).then_some(encoded)
}

impl Stream for Framed {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(bytes) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(bytes)));
            }
            if let Some(why) = this.failure.take() {
                this.complete();
                this.done = true;
                return Poll::Ready(Some(Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, why))));
            }
            if this.done {
                this.complete();
                return Poll::Ready(None);
            }
            match this.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    this.buffer.extend_from_slice(&chunk);
                    if this.take_messages().is_err() {
                        tracing::warn!("the provider's event stream is malformed");
                        this.broken("upstream event stream malformed");
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!(error = %scrub(&e.to_string()), "the provider's stream broke off");
                    this.broken("upstream stream broke off");
                }
                Poll::Ready(None) => {
                    if !this.buffer.is_empty() {
                        tracing::warn!("the provider's event stream ended inside a message");
                        this.broken("upstream event stream cut inside a message");
                        continue;
                    }
                    this.ended = true;
                    this.done = true;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for Framed {
    fn drop(&mut self) {
        self.complete();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AKIACANARY0123456789/abcdefghijklmnopqrstuvwxyz";

    fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
        eventstream::encode(headers, payload)
    }

    #[test]
    fn a_key_in_a_frame_is_scrubbed_or_the_frame_dropped() {
        let echo = EchoScrubber::new(&[KEY]).unwrap();
        let relay = |f: &[u8]| relayed(f, &eventstream::decode(f).unwrap(), Some(&echo));
        let clean = frame(&[(":event-type", "chunk")], b"{\"bytes\":\"aGk=\"}");
        assert_eq!(relay(&clean), Some(clean.clone()), "untouched");
        let in_payload = frame(&[(":event-type", "chunk")], format!("{{\"text\":\"{KEY}\"}}").as_bytes());
        let out = relay(&in_payload).expect("rewritten");
        assert!(!out.windows(KEY.len()).any(|w| w == KEY.as_bytes()) && eventstream::decode(&out).is_ok());
        let in_header = frame(&[(":event-type", "chunk"), ("x-note", KEY)], b"{}");
        assert_eq!(relay(&in_header), None);
        // Split between the last header's value and the payload, contiguous on the wire.
        let split = frame(&[(":event-type", "chunk"), ("x-note", &KEY[..6])], &KEY.as_bytes()[6..]);
        assert!(echo.found_in(&split));
        assert_eq!(relay(&split), None, "a key whole only across header and payload is dropped");
        assert_eq!(relayed(&split, &eventstream::decode(&split).unwrap(), None), Some(split.clone()), "no echo: as is");
    }
}
