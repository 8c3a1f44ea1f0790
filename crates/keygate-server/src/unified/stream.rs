//! [`Translating`]: an Anthropic or Gemini stream on its way to an OpenAI SDK. The
//! passthrough's [`Metered`] reads usage and scrubs each whole event; each event is then
//! translated ([`anthropic::Stream`], [`gemini::Stream`]) into `chat.completion.chunk`s,
//! `data: [DONE]` at the end. A stream that breaks off, or ends before it is complete
//! (Anthropic's `message_stop`; every Gemini candidate finished), ends with an error event
//! (`data: {"error": {...}}`), never a silent truncation.

use crate::proxy::eventstream::Framed;
use crate::proxy::sse::Metered;
use axum::body::Bytes;
use futures_util::Stream;
use keygate_core::eventstream;
use keygate_core::translate::anthropic::{self, Out};
use keygate_core::translate::bedrock;
use keygate_core::translate::gemini;
use serde_json::Value;
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The state machine that translates one provider's events.
pub(super) enum Machine {
    Anthropic(anthropic::Stream),
    /// Gemini sends no end event: its stream is complete when it ends after every
    /// candidate finished.
    Gemini(gemini::Stream),
}

impl Machine {
    fn event(&mut self, data: &Value) -> Vec<Out> {
        match self {
            Machine::Anthropic(s) => s.event(data),
            Machine::Gemini(s) => s.event(data),
        }
    }

    fn cut(&mut self, why: &str) -> Vec<Out> {
        match self {
            Machine::Anthropic(s) => s.cut(why),
            Machine::Gemini(s) => s.cut(why),
        }
    }

    /// The provider ended the stream.
    fn end(&mut self) -> Vec<Out> {
        match self {
            Machine::Anthropic(s) => s.cut("the provider's stream ended before it was complete"),
            Machine::Gemini(s) => s.end(),
        }
    }
}

impl From<anthropic::Stream> for Machine {
    fn from(s: anthropic::Stream) -> Self {
        Machine::Anthropic(s)
    }
}

impl From<gemini::Stream> for Machine {
    fn from(s: gemini::Stream) -> Self {
        Machine::Gemini(s)
    }
}

pub(super) struct Translating {
    inner: Metered,
    state: Machine,
    pending: VecDeque<Bytes>,
    /// The metered stream has ended: nothing more comes.
    ended: bool,
}

impl Translating {
    pub fn new(inner: Metered, state: impl Into<Machine>) -> Self {
        Self { inner, state: state.into(), pending: VecDeque::new(), ended: false }
    }

    fn emit(&mut self, outs: Vec<Out>) {
        for out in outs {
            let framed = match out {
                Out::Chunk(v) | Out::Error(v) => format!("data: {v}\n\n"),
                Out::Done => "data: [DONE]\n\n".to_owned(),
            };
            self.pending.push_back(Bytes::from(framed));
        }
    }

    /// One whole SSE event from upstream. Once the translation is done (after
    /// `message_stop` or an error), later events are read (so the metering sees the
    /// stream end) but not relayed.
    fn event(&mut self, event: &[u8]) {
        for data in data_of(event) {
            let outs = self.state.event(&data);
            self.emit(outs);
        }
    }
}

/// The JSON documents in an event's `data:` lines.
fn data_of(event: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(event)
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str(data.trim()).ok())
        .collect()
}

impl Stream for Translating {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(bytes) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(bytes)));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(event))) => this.event(&event),
                Poll::Ready(Some(Err(_))) => {
                    // Metered has settled what passed; the caller learns the stream broke.
                    let outs = this.state.cut("the provider's stream broke off before it was complete");
                    this.emit(outs);
                    this.ended = true;
                }
                Poll::Ready(None) => {
                    let outs = this.state.end();
                    this.emit(outs);
                    this.ended = true;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A Bedrock ConverseStream on its way to an OpenAI SDK. The passthrough's [`Framed`]
/// checks each event-stream message, reads usage from `metadata` and scrubs it; each
/// message is then decoded and translated ([`bedrock::Stream`]) into
/// `chat.completion.chunk`s, `data: [DONE]` at the end. An exception message, or a
/// stream that breaks off or ends before its answer is whole, ends with an error event.
pub(super) struct Frames {
    inner: Framed,
    state: bedrock::Stream,
    pending: VecDeque<Bytes>,
    ended: bool,
}

impl Frames {
    pub fn new(inner: Framed, state: bedrock::Stream) -> Self {
        Self { inner, state, pending: VecDeque::new(), ended: false }
    }

    fn emit(&mut self, outs: Vec<Out>) {
        for out in outs {
            let framed = match out {
                Out::Chunk(v) | Out::Error(v) => format!("data: {v}\n\n"),
                Out::Done => "data: [DONE]\n\n".to_owned(),
            };
            self.pending.push_back(Bytes::from(framed));
        }
    }

    /// One whole message (Framed relays exactly one per item).
    fn message(&mut self, frame: &[u8]) {
        let Ok(message) = eventstream::decode(frame) else {
            let outs = self.state.cut("the provider's event stream is malformed");
            return self.emit(outs);
        };
        let payload: Value = serde_json::from_slice(message.payload).unwrap_or(Value::Null);
        let outs = match message.header(":message-type").unwrap_or("event") {
            "event" => self.state.event(message.header(":event-type").unwrap_or(""), &payload),
            _ => self.state.exception(message.header(":exception-type").unwrap_or(""), &payload),
        };
        self.emit(outs);
    }
}

impl Stream for Frames {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(bytes) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(bytes)));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(frame))) => this.message(&frame),
                Poll::Ready(Some(Err(_))) => {
                    // Framed has settled what passed; the caller learns the stream broke.
                    let outs = this.state.cut("the provider's stream broke off before it was complete");
                    this.emit(outs);
                    this.ended = true;
                }
                Poll::Ready(None) => {
                    let outs = this.state.cut("the provider's stream ended before it was complete");
                    this.emit(outs);
                    this.ended = true;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A translated stream, scrubbed once more of the key that was sent: translation decodes
/// JSON escapes, so an echo the provider escaped only in part (`\u0073k-ant-…`) would
/// otherwise come out whole. Held-back bytes (a possible key cut at a chunk's end) go out
/// with the next chunk or at the end.
pub(super) struct Scrubbed<S> {
    inner: S,
    scrub: Option<keygate_vault::echo::StreamScrub>,
    done: bool,
}

impl<S> Scrubbed<S> {
    pub(super) fn new(inner: S, echo: Option<std::sync::Arc<keygate_vault::echo::EchoScrubber>>) -> Self {
        Self { inner, scrub: echo.map(|e| e.stream()), done: false }
    }
}

impl<S: Stream<Item = Result<Bytes, std::io::Error>> + Unpin> Stream for Scrubbed<S> {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => match &mut this.scrub {
                    None => return Poll::Ready(Some(Ok(chunk))),
                    Some(scrub) => {
                        let out = scrub.push(&chunk);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Bytes::from(out))));
                        }
                    }
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    this.done = true;
                    let rest = this.scrub.as_mut().map(|s| s.finish()).unwrap_or_default();
                    return Poll::Ready((!rest.is_empty()).then(|| Ok(Bytes::from(rest))));
                }
            }
        }
    }
}
