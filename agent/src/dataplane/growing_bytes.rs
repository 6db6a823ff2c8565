//! Bytes that only grow (the name files' contents, extended publish by publish), handed to
//! the name files' writer thread on every publish without copying what it was handed
//! before: at 10,000 policies the outcome names are megabytes, and a copy per publish,
//! under the cache's lock, was most of the publish path's own work.
//!
//! The bytes are kept as shared chunks. A snapshot seals what was appended since the last
//! one into a chunk (copying only those bytes) and shares the chunks. So that a snapshot
//! stays a handful of pointers, a sealed chunk is merged into the one before it while that
//! one is not at least twice as long: chunk lengths then fall geometrically, there are
//! O(log n) of them, and each byte is copied O(log n) times over the cache's life.

use std::io::Write;
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct GrowingBytes {
    sealed: Vec<Arc<[u8]>>,
    /// Appended since the last snapshot.
    open: Vec<u8>,
}

/// The bytes of a [`GrowingBytes`] at one moment; cheap to make and to send.
#[derive(Debug, Clone, Default)]
pub struct BytesSnapshot {
    chunks: Vec<Arc<[u8]>>,
}

impl GrowingBytes {
    pub fn clear(&mut self) {
        self.sealed.clear();
        self.open.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty() && self.sealed.is_empty()
    }

    /// Where new bytes go.
    pub fn open(&mut self) -> &mut Vec<u8> {
        &mut self.open
    }

    pub fn snapshot(&mut self) -> BytesSnapshot {
        if !self.open.is_empty() {
            let mut chunk = std::mem::take(&mut self.open);
            while let Some(last) = self.sealed.last()
                && last.len() < 2 * chunk.len()
            {
                let mut merged = Vec::with_capacity(last.len() + chunk.len());
                merged.extend_from_slice(last);
                merged.extend_from_slice(&chunk);
                chunk = merged;
                self.sealed.pop();
            }
            self.sealed.push(Arc::from(chunk));
        }
        BytesSnapshot {
            chunks: self.sealed.clone(),
        }
    }
}

impl BytesSnapshot {
    pub fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        self.chunks.iter().try_for_each(|c| out.write_all(c))
    }

    /// Writes the bytes from `offset` on (none if it is past the end).
    pub fn write_from(&self, offset: usize, out: &mut impl Write) -> std::io::Result<()> {
        let mut skip = offset;
        for chunk in &self.chunks {
            if skip >= chunk.len() {
                skip -= chunk.len();
                continue;
            }
            out.write_all(&chunk[skip..])?;
            skip = 0;
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.chunks.iter().map(|c| c.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn to_vec(&self) -> Vec<u8> {
        self.chunks.concat()
    }

    #[cfg(test)]
    fn chunk_count(&self) -> usize {
        self.chunks.len()
    }
}

impl From<Vec<u8>> for BytesSnapshot {
    fn from(bytes: Vec<u8>) -> BytesSnapshot {
        BytesSnapshot {
            chunks: vec![Arc::from(bytes)],
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    #[test]
    fn snapshots_hold_every_byte_in_order_and_stay_few_chunks() {
        let mut bytes = GrowingBytes::default();
        let mut expected = Vec::new();
        let mut earlier: Vec<(BytesSnapshot, Vec<u8>)> = Vec::new();
        for i in 0..5_000u32 {
            // Appends of varying length, some empty, as publishes add outcomes or none.
            let line = format!("{}\n", "x".repeat((i % 7) as usize * (i % 3) as usize));
            if i % 5 != 0 {
                bytes.open().extend_from_slice(line.as_bytes());
                expected.extend_from_slice(line.as_bytes());
            }
            let snapshot = bytes.snapshot();
            assert_eq!(snapshot.len(), expected.len());
            assert!(snapshot.chunk_count() <= 32, "{}", snapshot.chunk_count());
            if i % 1000 == 0 {
                earlier.push((snapshot.clone(), expected.clone()));
            }
            let mut written = Vec::new();
            snapshot.write_to(&mut written).unwrap();
            assert_eq!(written, expected);
            // Any tail, from any offset (chunk boundaries included), and past the end.
            for offset in [
                0,
                i as usize % 97,
                expected.len() / 2,
                expected.len(),
                expected.len() + 3,
            ] {
                let mut tail = Vec::new();
                snapshot.write_from(offset, &mut tail).unwrap();
                assert_eq!(
                    tail,
                    expected.get(offset..).unwrap_or_default(),
                    "from {offset}"
                );
            }
        }
        // Snapshots taken earlier still hold what they held.
        for (snapshot, held) in earlier {
            assert_eq!(snapshot.to_vec(), held);
        }
        bytes.clear();
        assert!(bytes.is_empty() && bytes.snapshot().is_empty());
    }
}
