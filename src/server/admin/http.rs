//! The little of HTTP/1.1 the admin listener speaks: a request head (request line and
//! headers, no body) parsed from bytes, and a whole response with `Connection: close`.
//! One request per connection, which is how Prometheus and health probes use it.
//!
//! Hand-written rather than a crate: the HTTP servers for Rust (hyper, axum, tiny_http) run
//! on tokio or on threads of their own, not on a glommio executor; this is a parser of one
//! head of at most [`super::MAX_HEAD_BYTES`], unit-tested and fuzzable, with no allocation
//! but the response.

/// What the admin listener needs of a request.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// The path without its query string.
    pub path: &'a str,
    /// The `Accept` header, if given.
    pub accept: Option<&'a str>,
}

/// Why a head was refused (400 Bad Request).
#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    NotUtf8,
    BadRequestLine,
    BadVersion,
    BadHeader,
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HeadError::NotUtf8 => "request head is not UTF-8",
            HeadError::BadRequestLine => "request line is not METHOD PATH VERSION",
            HeadError::BadVersion => "only HTTP/1.0 and HTTP/1.1 are spoken",
            HeadError::BadHeader => "a header line has no colon",
        })
    }
}

/// The length of the head at the start of `buf` (through the blank line that ends it), once
/// it has arrived whole.
pub fn head_len(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Parses a whole head (as [`head_len`] delimits it).
pub fn parse_head(head: &[u8]) -> Result<RequestHead<'_>, HeadError> {
    let text = std::str::from_utf8(head).map_err(|_| HeadError::NotUtf8)?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().ok_or(HeadError::BadRequestLine)?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::BadRequestLine);
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) || target.is_empty() {
        return Err(HeadError::BadRequestLine);
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(HeadError::BadVersion);
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    let mut accept = None;
    for line in lines {
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').ok_or(HeadError::BadHeader)?;
        if name.trim().eq_ignore_ascii_case("accept") {
            accept = Some(value.trim());
        }
    }
    Ok(RequestHead {
        method,
        path,
        accept,
    })
}

/// Whether an `Accept` header asks for OpenMetrics text.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',')
            .any(|t| t.trim().starts_with("application/openmetrics-text"))
    })
}

/// The reason phrase of the statuses the admin listener answers with.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A whole response: status line, headers, body; the connection closes after it.
pub fn response(status: u16, content_type: &str, body: &[u8], extra: &[(&str, &str)]) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n",
        reason(status),
        body.len()
    );
    for (k, v) in extra {
        head.push_str(k);
        head.push_str(": ");
        head.push_str(v);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A plain-text error response.
pub fn text(status: u16, message: &str) -> Vec<u8> {
    response(
        status,
        "text/plain; charset=utf-8",
        format!("{message}\n").as_bytes(),
        &[],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_ends_at_the_first_blank_line() {
        assert_eq!(head_len(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"), Some(24));
        assert_eq!(head_len(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_len(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
        assert_eq!(head_len(b""), None);
    }

    #[test]
    fn parses_method_path_and_accept() {
        let h = parse_head(
            b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\naccept: application/openmetrics-text; version=1.0.0,text/plain;q=0.5\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.method, "GET");
        assert_eq!(h.path, "/metrics");
        assert!(wants_openmetrics(h.accept));
        let h = parse_head(b"POST /v1/health HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!((h.method, h.path, h.accept), ("POST", "/v1/health", None));
        assert!(!wants_openmetrics(Some("text/plain")));
        assert!(!wants_openmetrics(None));
    }

    #[test]
    fn refuses_malformed_heads() {
        assert_eq!(parse_head(b"GET /\r\n\r\n"), Err(HeadError::BadRequestLine));
        assert_eq!(
            parse_head(b"GET  / HTTP/1.1\r\n\r\n"),
            Err(HeadError::BadRequestLine)
        );
        assert_eq!(
            parse_head(b"get / HTTP/1.1\r\n\r\n"),
            Err(HeadError::BadRequestLine)
        );
        assert_eq!(
            parse_head(b"GET / HTTP/2\r\n\r\n"),
            Err(HeadError::BadVersion)
        );
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nnocolon\r\n\r\n"),
            Err(HeadError::BadHeader)
        );
        assert_eq!(
            parse_head(b"GET /\xff HTTP/1.1\r\n\r\n"),
            Err(HeadError::NotUtf8)
        );
        assert_eq!(parse_head(b""), Err(HeadError::BadRequestLine));
    }

    #[test]
    fn responses_carry_length_and_close() {
        let r = response(200, "text/plain", b"hi", &[("Allow", "GET")]);
        assert_eq!(
            r,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\nAllow: GET\r\n\r\nhi"
        );
        assert!(
            text(431, "too big").starts_with(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
        );
    }
}
