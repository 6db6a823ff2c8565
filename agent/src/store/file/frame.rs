//! The framing of every record palisade writes to the store's files:
//!
//! ```text
//! length: u32 LE | crc: u32 LE | payload (length bytes of JSON)
//! ```
//!
//! `crc` is CRC-32 over the length bytes and the payload, so a damaged length is caught
//! too. A write that never finished (a torn tail) was never acknowledged and is ignored:
//! a frame that stops short, or one whose bytes never all landed, which shows as zeros
//! (JSON never holds a zero byte; a file that grew without its data reads zeros there, as
//! does a disk sector that was never written). Any other damaged frame is corruption, also
//! the last one: it was written whole, so its damage came later, to an acknowledged commit.
//! etcd's WAL draws the same line (a torn entry has a zeroed sector; a CRC mismatch
//! elsewhere is corruption).

pub(super) const HEADER_LEN: usize = 8;

/// What [`read_frame`] found at a position.
#[derive(Debug, PartialEq)]
pub(super) enum Next<'a> {
    /// A complete, intact frame; the next one starts at `end`.
    Frame { payload: &'a [u8], end: usize },
    /// Nothing left.
    End,
    /// The rest is an unfinished write.
    Torn,
    /// A damaged frame followed by more data; says what is wrong with it.
    Corrupt(String),
}

/// Frames `payload`; `None` if it is too long for the length field.
pub(super) fn encode(payload: &[u8]) -> Option<Vec<u8>> {
    let len = u32::try_from(payload.len()).ok()?;
    let len_bytes = len.to_le_bytes();
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&len_bytes);
    out.extend_from_slice(&checksum(len_bytes, payload).to_le_bytes());
    out.extend_from_slice(payload);
    Some(out)
}

/// Reads the frame starting at `pos` of `buf`.
pub(super) fn read_frame(buf: &[u8], pos: usize) -> Next<'_> {
    let rest = buf.get(pos..).unwrap_or_default();
    if rest.is_empty() {
        return Next::End;
    }
    let Some((header, body)) = rest.split_first_chunk::<HEADER_LEN>() else {
        return Next::Torn;
    };
    let [l0, l1, l2, l3, c0, c1, c2, c3] = *header;
    let len_bytes = [l0, l1, l2, l3];
    let stored_crc = u32::from_le_bytes([c0, c1, c2, c3]);
    // u32 always fits usize on the 32- and 64-bit targets palisade runs on.
    let len = u32::from_le_bytes(len_bytes) as usize;
    let Some(payload) = body.get(..len) else {
        return Next::Torn;
    };
    if len > 0 && checksum(len_bytes, payload) == stored_crc {
        return Next::Frame {
            payload,
            end: pos + HEADER_LEN + len,
        };
    }
    // Only the last, not yet synced record can be damaged by a crash, and what a crash
    // leaves of it is zeros where its data never landed, or after it where the file grew.
    let after = &body[len..];
    let never_landed = payload.contains(&0)
        || rest[..HEADER_LEN + len].iter().all(|&b| b == 0)
        || (!after.is_empty() && after.iter().all(|&b| b == 0));
    if never_landed {
        Next::Torn
    } else if after.is_empty() {
        Next::Corrupt("fails its checksum, although it was written whole".to_string())
    } else {
        Next::Corrupt(format!(
            "fails its checksum and is followed by {} more bytes",
            after.len()
        ))
    }
}

fn checksum(len_bytes: [u8; 4], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len_bytes);
    hasher.update(payload);
    hasher.finalize()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_sequence() {
        let mut buf = encode(b"{\"a\":1}").unwrap();
        buf.extend(encode(b"[2]").unwrap());
        let Next::Frame { payload, end } = read_frame(&buf, 0) else {
            panic!("first frame")
        };
        assert_eq!(payload, b"{\"a\":1}");
        let Next::Frame { payload, end } = read_frame(&buf, end) else {
            panic!("second frame")
        };
        assert_eq!(payload, b"[2]");
        assert_eq!(read_frame(&buf, end), Next::End);
    }

    #[test]
    fn every_prefix_of_a_frame_is_torn() {
        let mut buf = encode(b"first").unwrap();
        let start = buf.len();
        buf.extend(encode(b"second record").unwrap());
        for cut in start + 1..buf.len() {
            assert_eq!(read_frame(&buf[..cut], start), Next::Torn, "cut at {cut}");
        }
    }

    #[test]
    fn a_write_that_never_landed_is_torn_any_other_damage_is_corrupt() {
        let whole = encode(b"{\"first\":1}").unwrap();
        // Part of the last record never reached the disk: zeros in its payload.
        let mut unwritten = whole.clone();
        unwritten[HEADER_LEN + 3..].fill(0);
        assert_eq!(read_frame(&unwritten, 0), Next::Torn);
        // The file grew, its data did not land.
        assert_eq!(read_frame(&[0u8; 64], 0), Next::Torn);
        let mut zeros_after = whole.clone();
        zeros_after[HEADER_LEN] ^= 1;
        zeros_after.extend([0u8; 16]);
        assert_eq!(read_frame(&zeros_after, 0), Next::Torn);
        // Written whole, then damaged: at the end of the file as anywhere else.
        let mut flipped = whole.clone();
        flipped[HEADER_LEN] ^= 1;
        assert!(matches!(read_frame(&flipped, 0), Next::Corrupt(_)));
        flipped.extend(encode(b"second").unwrap());
        assert!(matches!(read_frame(&flipped, 0), Next::Corrupt(_)));
    }
}
