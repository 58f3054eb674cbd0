//! Where a request may come from. The `Host` must name this appliance (an IP literal, `localhost`, its own
//! hostname, or a configured name), so a hostile page that rebinds its DNS name to the appliance's address
//! cannot read it; and a command (any method but GET/HEAD) is refused when a browser says it comes from
//! another origin or when it has a content type a cross-site form can send without a CORS preflight.
//! Clients without `Origin` (curl, scripts, the documented operator commands) are not affected.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The names (lower-case, without port) this listener answers to besides IP literals.
#[derive(Debug, Clone)]
pub struct HostRule {
    names: Vec<String>,
}

impl HostRule {
    /// `localhost`, this machine's hostname and `<hostname>.local`, and `allowed` (`[telemetry] allowed_hosts`).
    pub fn new(allowed: &[String]) -> Self {
        Self::with_hostname(allowed, hostname().as_deref())
    }

    fn with_hostname(allowed: &[String], hostname: Option<&str>) -> Self {
        let mut names = vec!["localhost".to_owned()];
        if let Some(h) = hostname.map(|h| h.trim_end_matches('.').to_ascii_lowercase()).filter(|h| !h.is_empty()) {
            names.push(format!("{h}.local"));
            names.push(h);
        }
        names.extend(allowed.iter().map(|a| a.trim_end_matches('.').to_ascii_lowercase()));
        HostRule { names }
    }

    /// Whether a `Host` header value names this listener.
    pub fn allows(&self, host: &str) -> bool {
        match split_authority(host) {
            Some((name, _)) => is_ip_literal(name) || self.names.iter().any(|n| n.eq_ignore_ascii_case(name)),
            None => false,
        }
    }
}

/// Splits `host[:port]` (or `[v6][:port]`) into the host (brackets removed, trailing dot dropped) and port;
/// None when it is not of that shape.
fn split_authority(a: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        match after {
            "" => (v6, None),
            p => (v6, Some(p.strip_prefix(':')?)),
        }
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        }
    };
    let port = match port {
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
        None => None,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.contains(['/', '@', ' ', '[', ']']) {
        return None;
    }
    Some((host, port))
}

fn is_ip_literal(h: &str) -> bool {
    h.parse::<Ipv4Addr>().is_ok() || h.parse::<Ipv6Addr>().is_ok()
}

/// Whether `url` (an `Origin` value, or a `Referer` URL) has the same host and port as `host` (the request's
/// `Host` header). `Origin: null` (a sandboxed or file: page) never matches.
pub fn same_origin(url: &str, host: &str) -> bool {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => return false,
    };
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return false,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    match (split_authority(authority), split_authority(host)) {
        (Some((a, ap)), Some((b, bp))) => {
            a.eq_ignore_ascii_case(b) && ap.unwrap_or(default_port) == bp.unwrap_or(default_port)
        }
        _ => false,
    }
}

/// Content types a page on another origin can POST with a plain form or `fetch` without a CORS preflight
/// (the "CORS-safelisted" ones); a command with one of them is refused.
pub fn is_form(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or("").trim();
    ["application/x-www-form-urlencoded", "multipart/form-data", "text/plain"]
        .iter()
        .any(|f| media.eq_ignore_ascii_case(f))
}

/// This machine's hostname (gethostname), if it has one that is UTF-8.
fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer we own for the duration of the call.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        log::debug!("gethostname failed: {}", std::io::Error::last_os_error());
        return None;
    }
    // POSIX leaves truncation unterminated: without a NUL the name is unknown, not guessed.
    let end = buf.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&buf[..end]).ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_ip_literals_localhost_the_hostname_or_allowed() {
        let r = HostRule::with_hostname(&["Ember.Example.org".into()], Some("emberpi"));
        for ok in [
            "127.0.0.1",
            "127.0.0.1:9090",
            "192.168.1.20:80",
            "[::1]:9090",
            "[fe80::1]",
            "localhost:9090",
            "LOCALHOST",
            "emberpi",
            "emberpi.local:9090",
            "emberpi.local.",
            "ember.example.org:9090",
        ] {
            assert!(r.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:9090",
            "x",
            "",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "emberpi.evil",
            "127.0.0.1:90x",
            "[::1]x",
            "user@127.0.0.1",
            "::1",
        ] {
            assert!(!r.allows(bad), "{bad}");
        }
        // No hostname known: only localhost and the IP literals.
        assert!(!HostRule::with_hostname(&[], None).allows("emberpi"));
    }

    #[test]
    fn origins_and_referers_match_the_host_with_default_ports() {
        assert!(same_origin("http://127.0.0.1:9090", "127.0.0.1:9090"));
        assert!(same_origin("http://127.0.0.1:9090/index.html?x", "127.0.0.1:9090"));
        assert!(same_origin("HTTP://EmberPi", "emberpi:80"));
        assert!(same_origin("https://ember.example:443", "ember.example"));
        assert!(same_origin("http://[::1]:9090", "[::1]:9090"));
        assert!(!same_origin("http://evil.example", "127.0.0.1:9090"));
        assert!(!same_origin("http://127.0.0.1:9091", "127.0.0.1:9090"));
        assert!(!same_origin("http://127.0.0.1", "127.0.0.1:9090"));
        assert!(!same_origin("null", "127.0.0.1:9090"));
        assert!(!same_origin("file:///tmp/x.html", "127.0.0.1:9090"));
        assert!(!same_origin("http://127.0.0.1:9090@evil.example", "127.0.0.1:9090"));
    }

    #[test]
    fn form_content_types_are_the_preflight_free_ones() {
        for f in ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "Text/Plain;charset=UTF-8"] {
            assert!(is_form(f), "{f}");
        }
        for f in ["application/json", "", "application/octet-stream"] {
            assert!(!is_form(f), "{f}");
        }
    }
}
