//! HTTP/1.1 framing for the API: one request out of the bytes a connection has sent so far, and
//! a response into bytes. Bodies are framed by Content-Length only; heads and bodies have size
//! limits; anything the parser cannot frame is an error after which the connection closes.

/// Largest request head (request line and header fields) the server reads.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest request body the server reads.
pub const MAX_BODY: usize = 64 * 1024;
/// Most header fields in one request.
pub const MAX_HEADERS: usize = 32;

/// One complete request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target as sent (origin form: starts with `/`, may carry a query).
    pub target: String,
    pub body: Vec<u8>,
    /// Whether the connection stays open after the response (HTTP/1.1 unless `Connection:
    /// close`; HTTP/1.0 only with `Connection: keep-alive`).
    pub keep_alive: bool,
}

impl Request {
    /// The target without its query string.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

/// What the bytes received so far amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed. `expects_continue`: the head is complete and asked for
    /// `100 Continue` before the client sends its body.
    Incomplete { expects_continue: bool },
    /// A request, and how many bytes of the input it took.
    Complete { request: Request, consumed: usize },
}

/// A request the server cannot frame; it is answered with `status` and the connection closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FramingError {
    pub status: u16,
    pub message: String,
}

fn framing(status: u16, message: impl Into<String>) -> FramingError {
    FramingError {
        status,
        message: message.into(),
    }
}

/// Reads the first request out of `input`.
pub fn parse(input: &[u8]) -> Result<Parsed, FramingError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(input) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if input.len() > MAX_HEAD => {
            return Err(framing(400, format!("Request head exceeds {MAX_HEAD} bytes")))
        }
        Ok(httparse::Status::Partial) => {
            return Ok(Parsed::Incomplete {
                expects_continue: false,
            })
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(framing(400, format!("More than {MAX_HEADERS} header fields")))
        }
        Err(e) => return Err(framing(400, format!("Malformed HTTP request: {e}"))),
    };
    if head_len > MAX_HEAD {
        return Err(framing(400, format!("Request head exceeds {MAX_HEAD} bytes")));
    }
    // A complete head always has a method, a target and a version.
    let method = req.method.unwrap_or_default().to_owned();
    let target = req.path.unwrap_or_default().to_owned();
    let http_1_1 = req.version == Some(1);
    if !target.starts_with('/') {
        return Err(framing(
            400,
            format!("Unsupported request target {target:?}: expected a path"),
        ));
    }

    let mut content_length: Option<u64> = None;
    let (mut close, mut keep_alive, mut expects_continue) = (false, false, false);
    for header in req.headers.iter() {
        let value = std::str::from_utf8(header.value)
            .map_err(|_| framing(400, format!("Header {} is not UTF-8", header.name)))?
            .trim();
        if header.name.eq_ignore_ascii_case("content-length") {
            let length = parse_content_length(value)?;
            if content_length.is_some_and(|seen| seen != length) {
                return Err(framing(400, "Conflicting Content-Length headers"));
            }
            content_length = Some(length);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(framing(
                501,
                "Transfer-Encoding is not supported: send the body with a Content-Length",
            ));
        } else if header.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                close |= token.eq_ignore_ascii_case("close");
                keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        } else if header.name.eq_ignore_ascii_case("expect") {
            if !value.eq_ignore_ascii_case("100-continue") {
                return Err(framing(417, format!("Unsupported expectation {value:?}")));
            }
            expects_continue = true;
        }
    }
    let body_len = content_length.unwrap_or(0);
    if body_len > MAX_BODY as u64 {
        return Err(framing(413, format!("Request body exceeds {MAX_BODY} bytes")));
    }
    let end = head_len + body_len as usize;
    if input.len() < end {
        return Ok(Parsed::Incomplete { expects_continue });
    }
    Ok(Parsed::Complete {
        request: Request {
            method,
            target,
            body: input[head_len..end].to_vec(),
            keep_alive: !close && (http_1_1 || keep_alive),
        },
        consumed: end,
    })
}

fn parse_content_length(value: &str) -> Result<u64, FramingError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(framing(400, format!("Invalid Content-Length {value:?}")));
    }
    // All digits: the only way to fail is a number too large for any body.
    value
        .parse()
        .map_err(|_| framing(413, format!("Request body exceeds {MAX_BODY} bytes")))
}

/// The interim answer to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A response: a status, an optional JSON body and, for 405, the methods the resource allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Option<Vec<u8>>,
    pub allow: Option<&'static str>,
}

impl Response {
    /// 204: done, nothing to say.
    pub fn no_content() -> Self {
        Response {
            status: 204,
            body: None,
            allow: None,
        }
    }

    /// `status` with `value` as a JSON body.
    pub fn json(status: u16, value: &impl serde::Serialize) -> Self {
        // Serializing the API's own plain structs into memory cannot fail.
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        Response {
            status,
            body: Some(body),
            allow: None,
        }
    }

    /// An error: `{"fault_message": message}`.
    pub fn fault(status: u16, message: &str) -> Self {
        Response::json(status, &serde_json::json!({ "fault_message": message }))
    }

    /// The bytes on the wire. `close` adds `Connection: close`; `head_only` (a HEAD request)
    /// leaves the body out but keeps its length.
    pub fn encode(&self, close: bool, head_only: bool) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nServer: vessel-vmm\r\n",
            self.status,
            reason(self.status)
        );
        if let Some(body) = &self.body {
            head.push_str("Content-Type: application/json\r\n");
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        } else if self.status != 204 {
            head.push_str("Content-Length: 0\r\n");
        }
        if let Some(allow) = self.allow {
            head.push_str(&format!("Allow: {allow}\r\n"));
        }
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if let Some(body) = self.body.as_ref().filter(|_| !head_only) {
            bytes.extend_from_slice(body);
        }
        bytes
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(input: &[u8]) -> (Request, usize) {
        match parse(input) {
            Ok(Parsed::Complete { request, consumed }) => (request, consumed),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_request_with_a_body_and_the_next_one_behind_it() {
        let input = b"PUT /vm?x=1 HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}GET / HTTP/1.1\r\n\r\n";
        let (request, consumed) = complete(input);
        assert_eq!(
            (request.method.as_str(), request.path(), &request.body[..]),
            ("PUT", "/vm", &b"{}"[..])
        );
        assert!(request.keep_alive);
        let (next, rest) = complete(&input[consumed..]);
        assert_eq!((next.method.as_str(), next.body.len()), ("GET", 0));
        assert_eq!(consumed + rest, input.len());
    }

    #[test]
    fn partial_input_waits_and_100_continue_is_noticed() {
        assert_eq!(
            parse(b"GET / HT"),
            Ok(Parsed::Incomplete {
                expects_continue: false
            })
        );
        let head = b"PUT /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nab";
        assert_eq!(
            parse(head),
            Ok(Parsed::Incomplete {
                expects_continue: true
            })
        );
    }

    #[test]
    fn connection_persistence_follows_the_version_and_header() {
        assert!(
            !complete(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
                .0
                .keep_alive
        );
        assert!(!complete(b"GET / HTTP/1.0\r\n\r\n").0.keep_alive);
        assert!(
            complete(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                .0
                .keep_alive
        );
    }

    #[test]
    fn unframeable_requests_are_errors_with_a_status() {
        let status = |input: &[u8]| parse(input).unwrap_err().status;
        assert_eq!(status(b"GARBAGE\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), 400);
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(status(b"PUT / HTTP/1.1\r\nContent-Length: 70000\r\n\r\n"), 413);
        assert_eq!(
            status(b"PUT / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
            413
        );
        assert_eq!(
            status(b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            501
        );
        assert_eq!(status(b"GET http://x/ HTTP/1.1\r\n\r\n"), 400);
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.resize(MAX_HEAD + 1, b'a');
        assert_eq!(status(&long), 400);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X{i}: y\r\n")).collect();
        assert_eq!(status(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()), 400);
    }

    #[test]
    fn responses_encode_with_length_and_without_a_body_for_204() {
        let text = String::from_utf8(Response::fault(409, "no").encode(true, false)).unwrap();
        assert!(text.starts_with("HTTP/1.1 409 Conflict\r\n"), "{text}");
        assert!(text.contains("Content-Length: 22\r\nConnection: close\r\n\r\n{\"fault_message\":\"no\"}"));
        let text = String::from_utf8(Response::no_content().encode(false, false)).unwrap();
        assert_eq!(text, "HTTP/1.1 204 No Content\r\nServer: vessel-vmm\r\n\r\n");
        let head = Response::json(200, &1).encode(false, true);
        assert!(head.ends_with(b"Content-Length: 1\r\n\r\n"));
    }
}
