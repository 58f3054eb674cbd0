//! The request head as the listener parses it, from bytes: the request line, the path percent-decoded once for
//! every route, and the header lines. A header value that is not UTF-8 stays opaque bytes: it only matters to a
//! request that needs that header (which then gets a clear 400), never to the others around it.

use std::fmt;

/// One parsed request head; borrows the listener's buffer.
#[derive(Debug)]
pub struct Head<'a> {
    pub method: &'a str,
    /// Percent-decoded, except that an encoded `/` or `%` stays encoded (`%2F`, `%25`): the segments stay the
    /// segments the client sent, and a route that takes a segment as a name decodes it with [`segment`].
    pub path: String,
    /// The raw query string (not decoded: the parameters read from it are plain tokens and flags).
    pub query: &'a str,
    headers: Vec<(&'a [u8], &'a [u8])>,
}

/// Why a head is a 400; the text goes back to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bad {
    RequestLine,
    Path,
    /// A header the request needs is not UTF-8, or is there twice where only one is allowed.
    Header(&'static str),
}

impl fmt::Display for Bad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bad::RequestLine => write!(f, "malformed request line"),
            Bad::Path => write!(f, "malformed path (bad percent-encoding or not UTF-8)"),
            Bad::Header(name) => write!(f, "malformed {name} header (not UTF-8, or given twice)"),
        }
    }
}

/// Parses a head (the bytes before the blank line).
pub fn parse(buf: &[u8]) -> Result<Head<'_>, Bad> {
    let mut lines = buf.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = std::str::from_utf8(lines.next().unwrap_or_default()).map_err(|_| Bad::RequestLine)?;
    let mut parts = first.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method.is_empty() || target.is_empty() {
        return Err(Bad::RequestLine);
    }
    let (raw_path, query) = target.split_once('?').unwrap_or((target, ""));
    let path = canonical_path(raw_path).ok_or(Bad::Path)?;
    // A line without a colon is not a header; it is skipped rather than failing the request, as it always was.
    let headers = lines
        .filter_map(|l| {
            let colon = l.iter().position(|&b| b == b':')?;
            Some((l[..colon].trim_ascii(), l[colon + 1..].trim_ascii()))
        })
        .collect();
    Ok(Head { method, path, query, headers })
}

impl<'a> Head<'a> {
    /// The first header named `name` (ASCII case-insensitive), as text; a 400 if its value is not UTF-8.
    pub fn header(&self, name: &'static str) -> Result<Option<&'a str>, Bad> {
        match self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes())) {
            None => Ok(None),
            Some((_, v)) => std::str::from_utf8(v).map(Some).map_err(|_| Bad::Header(name)),
        }
    }

    /// A header that must appear at most once (`Host`: two of them would let two parsers disagree on the
    /// request's target).
    pub fn single(&self, name: &'static str) -> Result<Option<&'a str>, Bad> {
        if self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes())).count() > 1 {
            return Err(Bad::Header(name));
        }
        self.header(name)
    }
}

/// Decodes every `%XX` except `%2F` and `%25`, which are kept (upper-cased) so the result splits into the
/// same segments as the raw path and can be decoded again by [`segment`] without double-decoding anything.
/// None for a `%` not followed by two hex digits, or for bytes that are not UTF-8 once decoded.
fn canonical_path(raw: &str) -> Option<String> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            // Two hex digits, checked as such: `from_str_radix` alone also takes a sign (`%+F` would be 0x0F).
            let h = b.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit))?;
            let v = std::str::from_utf8(h).ok().and_then(|h| u8::from_str_radix(h, 16).ok())?;
            match v {
                b'/' => out.extend_from_slice(b"%2F"),
                b'%' => out.extend_from_slice(b"%25"),
                _ => out.push(v),
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// One segment of a [`Head::path`] as the name it stands for (`%2F` and `%25` decoded).
pub fn segment(s: &str) -> String {
    s.replace("%2F", "/").replace("%25", "%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_line_path_query_and_headers() {
        let h = parse(
            b"POST /api/zones/boiler%2Droom/silence?x=1 HTTP/1.1\r\nHost: 127.0.0.1:9090\r\nno colon\r\n\
                        authorization:  Bearer t \r\nHOST: again",
        )
        .unwrap();
        assert_eq!((h.method, h.path.as_str(), h.query), ("POST", "/api/zones/boiler-room/silence", "x=1"));
        assert_eq!(h.header("Authorization"), Ok(Some("Bearer t")));
        assert_eq!(h.header("Host"), Ok(Some("127.0.0.1:9090")));
        assert_eq!(h.single("Host"), Err(Bad::Header("Host")));
        assert_eq!(h.header("Origin"), Ok(None));
    }

    #[test]
    fn a_non_utf8_header_is_opaque_until_it_is_needed() {
        let h =
            parse(b"GET /health HTTP/1.1\r\nX-Junk: \xff\xfe\r\nAuthorization: Bearer t\r\nCookie: a\x80\r\n").unwrap();
        assert_eq!(h.path, "/health");
        assert_eq!(h.header("Authorization"), Ok(Some("Bearer t")));
        assert_eq!(h.header("Cookie"), Err(Bad::Header("Cookie")));
        // Header names are matched as bytes, so a non-UTF-8 name hides nothing either.
        let h = parse(b"GET / HTTP/1.1\r\n\xff: x\r\nHost: a\r\n").unwrap();
        assert_eq!(h.single("Host"), Ok(Some("a")));
        assert_eq!(parse(b"GET /\xff HTTP/1.1\r\n").unwrap_err(), Bad::RequestLine);
    }

    #[test]
    fn paths_are_decoded_once_and_keep_their_segments() {
        let p = |raw: &str| parse(format!("GET {raw} HTTP/1.1").as_bytes()).map(|h| h.path);
        assert_eq!(p("/he%61lth"), Ok("/health".into()));
        assert_eq!(p("/cameras/a%2fb/snapshot.jpg"), Ok("/cameras/a%2Fb/snapshot.jpg".into()));
        assert_eq!(segment("a%2Fb"), "a/b");
        // `%2541` is an encoded `%` followed by `41`: it must not come out as `A`.
        assert_eq!(p("/x%2541"), Ok("/x%2541".into()));
        assert_eq!(segment("x%2541"), "x%41");
        assert_eq!(p("/caf%C3%A9"), Ok("/café".into()));
        assert_eq!(p("/x%zz"), Err(Bad::Path));
        assert_eq!(p("/x%4"), Err(Bad::Path));
        assert_eq!(p("/x%ff"), Err(Bad::Path));
        // Found by fuzzing (fuzz/, target http_head): a sign is not a hex digit.
        assert_eq!(p("/x%+F"), Err(Bad::Path));
        assert_eq!(p("/x%-1"), Err(Bad::Path));
        assert_eq!(p("/x%+"), Err(Bad::Path));
        assert_eq!(parse(b"GET").unwrap_err(), Bad::RequestLine);
        assert_eq!(parse(b"").unwrap_err(), Bad::RequestLine);
    }
}
