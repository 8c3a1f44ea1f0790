//! Logging. Every formatted event passes through [`Redacting`], which scrubs known
//! secret shapes (see `keygate_vault::redact`) from the whole line (message, fields,
//! span context) before it reaches the output: a last line of defence behind secret
//! types, at every level including TRACE.

use keygate_vault::redact::scrub;
use std::io::{self, Write};
use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Wraps a [`MakeWriter`] so everything written through it is scrubbed.
#[derive(Debug, Clone)]
pub struct Redacting<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter { inner: self.0.make_writer(), buf: Vec::with_capacity(256) }
    }
}

/// Buffers one event and writes it scrubbed when dropped or flushed.
#[derive(Debug)]
pub struct RedactingWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> RedactingWriter<W> {
    fn emit(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&self.buf);
        let result = self.inner.write_all(scrub(&text).as_bytes());
        self.buf.clear();
        result
    }
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.emit()?;
        self.inner.flush()
    }
}

impl<W: Write> Drop for RedactingWriter<W> {
    fn drop(&mut self) {
        let _ = self.emit();
    }
}

/// The subscriber keygate logs through, writing to `writer`. `filter` is an `EnvFilter`
/// directive such as `info` or `keygate=debug,sqlx=warn`.
pub fn subscriber<W>(filter: &str, writer: W, ansi: bool) -> Result<impl Subscriber + Send + Sync, String>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(filter).map_err(|e| format!("invalid log filter `{filter}`: {e}"))?;
    Ok(tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Redacting(writer))
        .with_ansi(ansi)
        .with_target(true)
        .finish())
}

/// Installs [`subscriber`] on standard error as the process-wide default.
pub fn init(filter: &str) -> Result<(), String> {
    use std::io::IsTerminal;
    let sub = subscriber(filter, io::stderr, io::stderr().is_terminal())?;
    tracing::subscriber::set_global_default(sub).map_err(|e| e.to_string())
}
