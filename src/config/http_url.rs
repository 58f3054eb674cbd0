//! The `http://` URL of an MJPEG camera: configuration syntax, so it is parsed here (and checked at load time)
//! and the camera client reuses the parsed form.

/// An `http://[user[:pass]@]host[:port][/path]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
    /// `user:pass`, percent-decoded, for Basic authentication.
    pub credentials: Option<String>,
}

impl HttpUrl {
    pub fn parse(s: &str) -> Result<HttpUrl, String> {
        let s = s.trim();
        let rest = match s.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
                return Err("https is not supported: use the camera's plain http stream".into());
            }
            Some((scheme, _)) => return Err(format!("unsupported scheme `{scheme}`, expected http://")),
            None => return Err("expected http://host[:port]/path".into()),
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let path = match path {
            "" => "/".to_owned(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_owned(),
        };
        if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err("the path must not contain spaces or control characters (percent-encode them)".into());
        }
        let (credentials, hostport) = match authority.rsplit_once('@') {
            Some((user, hp)) => (Some(percent_decode(user)?), hp),
            None => (None, authority),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("unclosed `[` in an IPv6 host")?;
            match after {
                "" => (h, None),
                p => (h, Some(p.strip_prefix(':').ok_or("expected `:port` after `]`")?)),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() || host.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'/') {
            return Err("missing or invalid host".into());
        }
        let port = match port {
            None => 80,
            Some(p) => p.parse::<u16>().ok().filter(|&p| p > 0).ok_or_else(|| format!("invalid port `{p}`"))?,
        };
        Ok(HttpUrl { host: host.to_owned(), port, path, credentials })
    }

    /// The URL without credentials, for logs.
    pub fn redacted(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("http://{host}:{}{}", self.port, self.path)
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let v = hex.and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or("bad %-escape in the credentials")?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "credentials are not UTF-8".to_owned())
}
