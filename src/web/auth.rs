//! Who may use the web listener: an optional bearer token (header or `?token=`) and optional HTTP basic
//! credentials. Compared in constant time; /health stays open for probes.

/// The configured secrets; both None means open (only allowed on loopback, checked with `[telemetry]` in config).
#[derive(Debug, Clone, Default)]
pub struct Auth {
    token: Option<String>,
    /// The base64 of "user:password", as it appears after `Basic `.
    basic: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// 401; `basic` says whether to ask the browser for credentials.
    Denied {
        basic: bool,
    },
}

impl Auth {
    pub fn new(token: Option<&str>, basic: Option<&str>) -> Self {
        Auth { token: token.map(str::to_owned), basic: basic.map(|b| base64(b.as_bytes())) }
    }

    pub fn is_open(&self) -> bool {
        self.token.is_none() && self.basic.is_none()
    }

    /// Checks a request's `Authorization` header value and query string.
    pub fn check(&self, authorization: Option<&str>, query: &str) -> Verdict {
        if self.is_open() {
            return Verdict::Allowed;
        }
        let header = authorization.map(str::trim).unwrap_or("");
        if let Some(t) = &self.token {
            let given =
                header.strip_prefix("Bearer ").map(str::trim).or_else(|| query_param(query, "token")).unwrap_or("");
            if ct_eq(given.as_bytes(), t.as_bytes()) {
                return Verdict::Allowed;
            }
        }
        if let Some(b) = &self.basic
            && let Some(given) = header.strip_prefix("Basic ")
            && ct_eq(given.trim().as_bytes(), b.as_bytes())
        {
            return Verdict::Allowed;
        }
        Verdict::Denied { basic: self.basic.is_some() }
    }
}

impl Auth {
    /// The user named by basic credentials that match the configured ones (so a log never names a guess).
    pub fn basic_user(&self, given: &str) -> Option<String> {
        let b = self.basic.as_ref()?;
        if !ct_eq(given.as_bytes(), b.as_bytes()) {
            return None;
        }
        let raw = unbase64(given)?;
        let text = String::from_utf8(raw).ok()?;
        text.split_once(':').map(|(u, _)| u.to_owned())
    }
}

fn unbase64(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in s {
        acc = acc << 6 | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// The raw value of `name` in a query string (no percent-decoding: tokens are plain).
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v))
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            out.push(if i <= c.len() { T[(n >> shift & 63) as usize] as char } else { '=' });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_by_header_or_query_and_basic_credentials() {
        let a = Auth::new(Some("s3cret"), Some("op:pw"));
        assert_eq!(a.check(Some("Bearer s3cret"), ""), Verdict::Allowed);
        assert_eq!(a.check(None, "overlay=1&token=s3cret"), Verdict::Allowed);
        assert_eq!(a.check(Some("Basic b3A6cHc="), ""), Verdict::Allowed);
        assert_eq!(a.check(Some("Bearer s3cre"), ""), Verdict::Denied { basic: true });
        assert_eq!(a.check(None, "token=nope"), Verdict::Denied { basic: true });
        assert_eq!(a.check(Some("Basic b3A6cHg="), ""), Verdict::Denied { basic: true });
        assert_eq!(Auth::new(Some("t"), None).check(None, ""), Verdict::Denied { basic: false });
        assert_eq!(Auth::default().check(None, ""), Verdict::Allowed);
    }

    #[test]
    fn the_basic_user_is_named_only_when_the_credentials_match() {
        let a = Auth::new(None, Some("op:pw"));
        assert_eq!(a.basic_user("b3A6cHc=").as_deref(), Some("op"));
        assert_eq!(a.basic_user("b3A6cHg="), None);
        assert_eq!(Auth::new(Some("t"), None).basic_user("b3A6cHc="), None);
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }
}
