//! `.steward/MANIFEST.sha256`: one `sha256sum` line per regular file, written and read
//! exactly as GNU coreutils does, so `sha256sum -c --strict` checks an extracted archive.

/// Formats one manifest line for `path` (archive path bytes) with `digest` (32 bytes).
///
/// coreutils escapes a name holding `\`, newline or carriage return: the line starts with
/// `\` and those bytes become `\\`, `\n`, `\r`.
pub fn format_line(digest: &[u8], path: &[u8]) -> Vec<u8> {
    let needs_escape = path.iter().any(|b| matches!(b, b'\\' | b'\n' | b'\r'));
    let mut line = Vec::with_capacity(path.len() + 68);
    if needs_escape {
        line.push(b'\\');
    }
    line.extend_from_slice(hex::encode(digest).as_bytes());
    line.extend_from_slice(b"  ");
    for &b in path {
        match b {
            b'\\' if needs_escape => line.extend_from_slice(b"\\\\"),
            b'\n' => line.extend_from_slice(b"\\n"),
            b'\r' => line.extend_from_slice(b"\\r"),
            _ => line.push(b),
        }
    }
    line.push(b'\n');
    line
}

/// Parses one manifest line (without its newline) into (digest bytes, path bytes).
pub fn parse_line(line: &[u8]) -> Option<([u8; 32], Vec<u8>)> {
    let (escaped, rest) = match line.strip_prefix(b"\\") {
        Some(r) => (true, r),
        None => (false, line),
    };
    if rest.len() < 66 || &rest[64..66] != b"  " {
        return None;
    }
    let mut digest = [0u8; 32];
    hex::decode_to_slice(&rest[..64], &mut digest).ok()?;
    let raw = &rest[66..];
    if !escaped {
        return Some((digest, raw.to_vec()));
    }
    let mut path = Vec::with_capacity(raw.len());
    let mut it = raw.iter();
    while let Some(&b) = it.next() {
        if b == b'\\' {
            match it.next()? {
                b'\\' => path.push(b'\\'),
                b'n' => path.push(b'\n'),
                b'r' => path.push(b'\r'),
                _ => return None,
            }
        } else {
            path.push(b);
        }
    }
    Some((digest, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips_like_coreutils() {
        let d = [0xabu8; 32];
        for name in [&b"plain name"[..], b"x\ny", b"x\ry", b"x\\y", b"\xff\xfe"] {
            let line = format_line(&d, name);
            let (d2, n2) = parse_line(&line[..line.len() - 1]).unwrap();
            assert_eq!(d2, d);
            assert_eq!(n2, name);
        }
        assert!(format_line(&d, b"x\\y").starts_with(b"\\abab"));
        assert!(format_line(&d, b"x\\y").ends_with(b"  x\\\\y\n"));
        assert!(!format_line(&d, b"plain").starts_with(b"\\"));
    }

    #[test]
    fn malformed_lines_are_rejected() {
        assert!(parse_line(b"zz  file").is_none());
        assert!(parse_line(b"").is_none());
    }
}
