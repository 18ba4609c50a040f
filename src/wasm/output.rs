//! Capturing a plugin's stdout and stderr: a bounded in-memory buffer per stream that
//! never fails a write (a guest whose `println!` failed would panic), drained into the
//! router's log under the plugin's name after every call.

use bytes::{Bytes, BytesMut};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// A bounded capture buffer; bytes past `capacity` are counted and dropped.
#[derive(Clone)]
pub struct Captured {
    inner: Arc<Mutex<Buffer>>,
    /// Set by every write, so that draining a stream nobody wrote to takes no lock.
    written: Arc<AtomicBool>,
    capacity: usize,
}

#[derive(Default)]
struct Buffer {
    bytes: BytesMut,
    dropped: usize,
}

impl Captured {
    pub fn new(capacity: usize) -> Self {
        Self { inner: Arc::new(Mutex::new(Buffer::default())), written: Arc::default(), capacity }
    }

    fn push(&self, data: &[u8]) {
        self.written.store(true, Ordering::Release);
        let mut b = self.inner.lock().expect("capture lock");
        let room = self.capacity.saturating_sub(b.bytes.len());
        let take = room.min(data.len());
        b.bytes.extend_from_slice(&data[..take]);
        b.dropped += data.len() - take;
    }

    /// Takes what was written since the last drain, and how many bytes were dropped.
    pub fn drain(&self) -> (Bytes, usize) {
        // A plain load first: most calls print nothing, and a swap is a locked instruction.
        if !self.written.load(Ordering::Relaxed) || !self.written.swap(false, Ordering::Acquire) {
            return (Bytes::new(), 0);
        }
        let mut b = self.inner.lock().expect("capture lock");
        let dropped = std::mem::take(&mut b.dropped);
        (b.bytes.split().freeze(), dropped)
    }
}

impl IsTerminal for Captured {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Captured {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Captured {
    async fn ready(&mut self) {}
}

impl OutputStream for Captured {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for Captured {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
