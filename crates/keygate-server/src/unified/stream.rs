//! [`Translating`]: an Anthropic stream on its way to an OpenAI SDK. The passthrough's
//! [`Metered`] reads usage and scrubs each whole event; each event is then translated
//! ([`anthropic::Stream`]) into `chat.completion.chunk`s, `data: [DONE]` at the end. A
//! stream that breaks off, or ends before `message_stop`, ends with an error event
//! (`data: {"error": {...}}`), never a silent truncation.

use crate::proxy::sse::Metered;
use axum::body::Bytes;
use futures_util::Stream;
use keygate_core::translate::anthropic::{self, Out};
use serde_json::Value;
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

pub(super) struct Translating {
    inner: Metered,
    state: anthropic::Stream,
    pending: VecDeque<Bytes>,
    /// The metered stream has ended: nothing more comes.
    ended: bool,
}

impl Translating {
    pub fn new(inner: Metered, state: anthropic::Stream) -> Self {
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
                    let outs = this.state.cut("the provider's stream ended before it was complete");
                    this.emit(outs);
                    this.ended = true;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
