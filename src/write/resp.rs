//! RESP encoding of the calls the writer sends: arrays of bulk strings, written into reused buffers.

/// Appends an array header `*<n>\r\n`.
pub fn array_header(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends one bulk string `$<len>\r\n<bytes>\r\n`.
pub fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    out.extend_from_slice(itoa::Buffer::new().format(bytes.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// Appends an integer as a bulk string.
pub fn bulk_int(out: &mut Vec<u8>, n: i64) {
    bulk(out, itoa::Buffer::new().format(n).as_bytes());
}

/// The bulk strings of `bytes`, a run of what [`bulk`] appends (`None`: it is not one).
pub fn bulks(mut bytes: &[u8]) -> Option<Vec<&[u8]>> {
    let mut parts = Vec::new();
    while !bytes.is_empty() {
        let rest = bytes.strip_prefix(b"$")?;
        let end = rest.iter().position(|b| *b == b'\r')?;
        let len: usize = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
        let rest = rest[end..].strip_prefix(b"\r\n")?;
        let (part, rest) = (rest.get(..len)?, rest.get(len..)?);
        bytes = rest.strip_prefix(b"\r\n")?;
        parts.push(part);
    }
    Some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulks_are_read_back() {
        let mut out = Vec::new();
        bulk(&mut out, b"a\r\nb");
        bulk(&mut out, b"");
        bulk_int(&mut out, 7);
        assert_eq!(bulks(&out), Some(vec![&b"a\r\nb"[..], b"", b"7"]));
        assert_eq!(bulks(b""), Some(vec![]));
        assert_eq!(bulks(b"$3\r\nab\r\n"), None);
        assert_eq!(bulks(b"$2\r\nab"), None);
    }

    #[test]
    fn encodes_like_redis_expects() {
        let mut out = Vec::new();
        array_header(&mut out, 2);
        bulk(&mut out, b"PING");
        bulk_int(&mut out, -42);
        assert_eq!(out, b"*2\r\n$4\r\nPING\r\n$3\r\n-42\r\n");
        let mut out = Vec::new();
        bulk(&mut out, b"");
        assert_eq!(out, b"$0\r\n\r\n");
    }
}
