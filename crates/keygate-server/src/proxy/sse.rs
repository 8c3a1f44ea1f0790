//! [`Metered`]: a streamed (SSE) answer on its way to the caller, passed through event by
//! event with usage read on the way. A stream that ends without its usage event — cut by
//! the provider, or left by the caller — is settled with what passed: the provider's
//! counts where it sent any, else an estimate from the text relayed, marked estimated.
//! Never zero for a stream that carried text.

use super::settle::Finish;
use axum::body::Bytes;
use futures_util::Stream;
use keygate_core::usage::{self, Dialect, Report, Tokens};
use keygate_vault::echo::EchoScrubber;
use keygate_vault::redact::scrub;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

type Upstream = super::client::BodyStream;

pub(crate) struct Metered {
    inner: Upstream,
    dialect: Dialect,
    /// Drop the usage-only chunk keygate asked for on the caller's behalf.
    strip_usage_chunk: bool,
    /// Every form of the call's secrets: each event leaves scrubbed of them.
    echo: Option<Arc<EchoScrubber>>,
    buffer: Vec<u8>,
    /// How much of `buffer` is known to hold no event end (the next search starts there).
    scanned: usize,
    pending: VecDeque<Bytes>,
    tokens: Tokens,
    /// Generated text relayed so far, in bytes.
    text_bytes: usize,
    /// The provider ended the stream itself (not cut, not left).
    ended: bool,
    done: bool,
    finish: Option<Finish>,
}

impl Metered {
    pub fn new(
        inner: Upstream,
        dialect: Dialect,
        strip_usage_chunk: bool,
        echo: Option<Arc<EchoScrubber>>,
        finish: Finish,
    ) -> Self {
        Self {
            inner,
            dialect,
            strip_usage_chunk,
            echo,
            buffer: Vec::new(),
            scanned: 0,
            pending: VecDeque::new(),
            tokens: Tokens::default(),
            text_bytes: 0,
            ended: false,
            done: false,
            finish: Some(finish),
        }
    }

    fn take_events(&mut self, at_end: bool) {
        loop {
            // Only what arrived since the last search (and the 3 bytes before it, where an
            // end may straddle two chunks): a provider that never ends an event costs one
            // pass over it, not one per chunk.
            let from = self.scanned.saturating_sub(3);
            let end = match find_event_end(&self.buffer[from..]) {
                Some(end) => from + end,
                None if at_end && !self.buffer.is_empty() => self.buffer.len(),
                None => {
                    self.scanned = self.buffer.len();
                    return;
                }
            };
            self.scanned = 0;
            let event: Vec<u8> = self.buffer.drain(..end).collect();
            let text = String::from_utf8_lossy(&event);
            let mut usage_only = false;
            for report in usage::sse_data(&text) {
                self.tokens.observe(self.dialect, &report);
                self.text_bytes += report.text_bytes();
                if self.model_unknown() {
                    self.note_model(&report);
                }
                usage_only |= report.is_usage_only_chunk();
            }
            if !(self.strip_usage_chunk && usage_only) {
                let event = match &self.echo {
                    Some(echo) if echo.found_in(&event) => echo.scrub(&event),
                    _ => event,
                };
                self.pending.push_back(Bytes::from(event));
            }
        }
    }

    fn model_unknown(&self) -> bool {
        self.finish.as_ref().is_some_and(|f| f.model.is_none())
    }

    fn note_model(&mut self, report: &Report) {
        if let (Some(finish), Some(model)) = (self.finish.as_mut(), report.model()) {
            finish.model = Some(model);
        }
    }

    /// Settles the call with what is known now.
    fn complete(&mut self) {
        if let Some(mut finish) = self.finish.take() {
            let mut tokens = self.tokens;
            // A stream the provider did not finish, or that never said what it cost,
            // is recorded from what passed rather than as nothing.
            if !(self.ended && tokens.final_report) && self.dialect != Dialect::Other {
                tokens.estimate_unreported(finish.request_bytes, self.text_bytes);
            }
            finish.settle(tokens);
        }
    }
}

/// The largest single event relayed (a stream whose event outgrows it is cut).
const MAX_EVENT_BYTES: usize = 8 << 20;

fn find_event_end(buffer: &[u8]) -> Option<usize> {
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    let crlf = buffer.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Stream for Metered {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(bytes) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(bytes)));
            }
            if this.done {
                this.complete();
                return Poll::Ready(None);
            }
            match this.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    this.buffer.extend_from_slice(&chunk);
                    this.take_events(false);
                    if this.buffer.len() > MAX_EVENT_BYTES {
                        // One event larger than any provider sends: the stream is cut, and
                        // the unfinished event never leaves (it is not scrubbed whole yet).
                        this.buffer.clear();
                        this.done = true;
                        this.complete();
                        tracing::warn!(max = MAX_EVENT_BYTES, "the provider's stream sent an event too large to relay");
                        return Poll::Ready(Some(Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "upstream event too large",
                        ))));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    // Cut off upstream: record what passed, and cut the caller's stream too.
                    this.take_events(true);
                    this.complete();
                    tracing::warn!(error = %scrub(&e.to_string()), "the provider's stream broke off");
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "upstream stream broke off",
                    ))));
                }
                Poll::Ready(None) => {
                    this.take_events(true);
                    this.ended = true;
                    this.done = true;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for Metered {
    /// A caller that goes away mid-stream still has what passed recorded.
    fn drop(&mut self) {
        self.complete();
    }
}
