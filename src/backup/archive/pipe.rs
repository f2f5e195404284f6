//! A bounded byte pipe between two threads that recycles its buffers, so that reading and
//! hashing on one core overlaps compressing or decompressing on another without
//! allocating per chunk. A writer can put a boundary mark in the stream: the reader sees
//! it as one end-of-file and then reads on (used between the data and trailer frames).

use std::io::{self, BufRead, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

const CHUNK: usize = 1 << 20;
const BUFFERS: usize = 3;

/// Creates a pipe with a few 1 MiB buffers in flight.
pub fn pipe() -> (PipeWriter, PipeReader) {
    let (full_tx, full_rx) = sync_channel::<Vec<u8>>(BUFFERS);
    let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(BUFFERS + 1);
    for _ in 0..BUFFERS - 1 {
        let _ = empty_tx.send(Vec::with_capacity(CHUNK));
    }
    (
        PipeWriter {
            buf: Vec::with_capacity(CHUNK),
            full: full_tx,
            empty: empty_rx,
        },
        PipeReader {
            cur: Vec::new(),
            pos: 0,
            full: full_rx,
            empty: empty_tx,
            closed: false,
        },
    )
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the other side of the pipe stopped",
    )
}

/// The sending half.
pub struct PipeWriter {
    buf: Vec<u8>,
    full: SyncSender<Vec<u8>>,
    empty: Receiver<Vec<u8>>,
}

impl PipeWriter {
    fn send_current(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self
            .empty
            .recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        let full = std::mem::replace(&mut self.buf, next);
        self.full.send(full).map_err(|_| closed())
    }

    /// Sends what is buffered, then a boundary the reader sees as end-of-file once.
    pub fn mark(&mut self) -> io::Result<()> {
        self.send_current()?;
        self.full.send(Vec::new()).map_err(|_| closed())
    }

    /// Reads from `r` straight into the pipe's buffer; returns 0 at the end of `r`.
    pub fn fill_from(&mut self, r: &mut impl Read) -> io::Result<usize> {
        if self.buf.len() == CHUNK {
            self.send_current()?;
        }
        let start = self.buf.len();
        self.buf.resize(CHUNK, 0);
        let n = loop {
            match r.read(&mut self.buf[start..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        self.buf.truncate(start + *n.as_ref().unwrap_or(&0));
        n
    }

    /// Bytes filled in but not yet sent.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Sends what is left; the reader sees the end after it.
    pub fn close(mut self) -> io::Result<()> {
        self.send_current()
    }
}

impl Write for PipeWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() == CHUNK {
            self.send_current()?;
        }
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The receiving half.
pub struct PipeReader {
    cur: Vec<u8>,
    pos: usize,
    full: Receiver<Vec<u8>>,
    empty: SyncSender<Vec<u8>>,
    closed: bool,
}

impl BufRead for PipeReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos >= self.cur.len() && !self.closed {
            let mut done = std::mem::take(&mut self.cur);
            if done.capacity() > 0 {
                done.clear();
                let _ = self.empty.try_send(done);
            }
            self.pos = 0;
            match self.full.recv() {
                // A mark: an empty slice, that is one end-of-file.
                Ok(next) => self.cur = next,
                Err(_) => self.closed = true,
            }
        }
        Ok(&self.cur[self.pos.min(self.cur.len())..])
    }
    fn consume(&mut self, amt: usize) {
        self.pos += amt;
    }
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        read_buffered(self, out)
    }
}

/// `Read::read` for a reader whose `BufRead` side holds the bytes: copies what the buffer
/// has, without a second buffer.
pub fn read_buffered(r: &mut impl BufRead, out: &mut [u8]) -> io::Result<usize> {
    let avail = r.fill_buf()?;
    let n = avail.len().min(out.len());
    out[..n].copy_from_slice(&avail[..n]);
    r.consume(n);
    Ok(n)
}

/// Copies `r` into `w` up to the next mark or the end, without an extra buffer.
pub fn copy_to_mark(r: &mut PipeReader, w: &mut impl Write) -> io::Result<u64> {
    let mut total = 0;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            // Step over the mark so the next copy reads what follows it.
            r.pos = usize::MAX;
            r.cur.clear();
            return Ok(total);
        }
        let n = buf.len();
        w.write_all(buf)?;
        r.consume(n);
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_split_the_stream_and_bytes_arrive_in_order() {
        let (mut w, mut r) = pipe();
        let t = std::thread::spawn(move || {
            let data: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
            w.write_all(&data).unwrap();
            w.mark().unwrap();
            w.write_all(b"trailer").unwrap();
            w.close().unwrap();
            data
        });
        let mut first = Vec::new();
        copy_to_mark(&mut r, &mut first).unwrap();
        let mut second = Vec::new();
        copy_to_mark(&mut r, &mut second).unwrap();
        assert_eq!(first, t.join().unwrap());
        assert_eq!(second, b"trailer");
    }
}
