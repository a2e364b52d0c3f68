//! A small blocking HTTP/1.1 server (and client) over [`crate::net`].
//!
//! One request per connection (`Connection: close`), served one at a time:
//! enough for a health endpoint, a status page or a sensor's readings on a
//! board, not for heavy traffic. Requests whose head exceeds 16 KiB or
//! whose body exceeds 1 MiB get `413`; malformed ones get `400`.
//!
//! ```no_run
//! use spoke_guest::http::{self, Response};
//! // Returns once the agent asks the pod to stop.
//! http::serve(8080, |req| match req.path.as_str() {
//!     "/" => Response::text(200, "hello from the edge\n"),
//!     _ => Response::text(404, "not found\n"),
//! })
//! .unwrap();
//! ```

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use crate::net::{TcpListener, TcpStream};

const MAX_HEAD: usize = 16 << 10;
const MAX_BODY: usize = 1 << 20;

/// A request as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target, e.g. `/ready?verbose=1`.
    pub path: String,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A response to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A `text/plain; charset=utf-8` response.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
            body: body.into().into_bytes(),
        }
    }

    /// An `application/json` response.
    pub fn json(status: u16, body: &serde_json::Value) -> Response {
        Response {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The bytes on the wire (`Content-Length` and `Connection: close` added).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (n, v) in &self.headers {
            // A header with a line break would split the response.
            if !n.contains(['\r', '\n']) && !v.contains(['\r', '\n']) {
                out.push_str(&format!("{n}: {v}\r\n"));
            }
        }
        out.push_str(&format!(
            "content-length: {}\r\nconnection: close\r\n\r\n",
            self.body.len()
        ));
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Why a request could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// Not HTTP/1.x as this server understands it (answer 400).
    Malformed(String),
    /// Head or body too large (answer 413).
    TooLarge,
    /// The connection failed or closed early.
    Io(io::Error),
}

/// Parses a request head (up to and without the blank line) into a
/// request without a body.
pub fn parse_head(head: &[u8]) -> Result<Request, ReadError> {
    let text = std::str::from_utf8(head)
        .map_err(|_| ReadError::Malformed("request head is not UTF-8".into()))?;
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(path), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Malformed(format!("bad request line {line:?}")));
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !path.starts_with('/') {
        return Err(ReadError::Malformed(format!("bad request line {line:?}")));
    }
    let mut headers = Vec::new();
    for l in lines {
        let Some((name, value)) = l.split_once(':') else {
            return Err(ReadError::Malformed(format!("bad header line {l:?}")));
        };
        if name.is_empty() || name.contains([' ', '\t']) {
            return Err(ReadError::Malformed(format!("bad header name {name:?}")));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok(Request {
        method: method.to_string(),
        path: path.to_string(),
        headers,
        body: Vec::new(),
    })
}

/// Reads one request from `conn`.
pub fn read_request(conn: &mut impl Read) -> Result<Request, ReadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(ReadError::TooLarge);
        }
        let n = conn.read(&mut chunk).map_err(ReadError::Io)?;
        if n == 0 {
            return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut request = parse_head(&buf[..head_end])?;
    let mut body = buf.split_off(head_end + 4);
    let headers = &request.headers;
    let length = match headers.iter().find(|(n, _)| n == "content-length") {
        Some((_, v)) => v
            .parse::<usize>()
            .map_err(|_| ReadError::Malformed(format!("bad content-length {v:?}")))?,
        None => 0,
    };
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && !v.eq_ignore_ascii_case("identity"))
    {
        return Err(ReadError::Malformed(
            "transfer-encoding is not supported; send content-length".into(),
        ));
    }
    if length > MAX_BODY {
        return Err(ReadError::TooLarge);
    }
    while body.len() < length {
        let n = conn.read(&mut chunk).map_err(ReadError::Io)?;
        if n == 0 {
            return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    request.body = body;
    Ok(request)
}

/// Answers one connection: reads a request, calls `handler`, writes the
/// response. Malformed requests are answered without calling `handler`.
pub fn handle(conn: &mut (impl Read + Write), handler: &mut impl FnMut(&Request) -> Response) {
    let response = match read_request(conn) {
        Ok(req) => handler(&req),
        Err(ReadError::Malformed(m)) => Response::text(400, format!("{m}\n")),
        Err(ReadError::TooLarge) => Response::text(413, "request too large\n"),
        // The client went away: nobody to answer.
        Err(ReadError::Io(_)) => return,
    };
    let _ = conn.write_all(&response.to_bytes());
    let _ = conn.flush();
}

/// Serves HTTP on `port` (at [`crate::net::listen_address`]) until the
/// agent asks the pod to stop; then returns `Ok(())`. Errors only when the
/// port cannot be listened on (e.g. it is not one of the container's
/// declared `ports`: `PermissionDenied`).
pub fn serve(port: u16, handler: impl FnMut(&Request) -> Response) -> io::Result<()> {
    let listener = TcpListener::bind(port)?;
    serve_on(&listener, handler)
}

/// [`serve`] on a listener the program made.
pub fn serve_on(
    listener: &TcpListener,
    mut handler: impl FnMut(&Request) -> Response,
) -> io::Result<()> {
    while let Some(mut conn) = listener.accept_or_stop()? {
        handle(&mut conn, &mut handler);
    }
    Ok(())
}

/// A plain `GET` to `addr`: returns the status and body. For health checks
/// of the pod's own server (loopback) and for calls out that the pod's
/// `spec.egress` allows.
pub fn get(addr: SocketAddr, path: &str) -> io::Result<(u16, Vec<u8>)> {
    let mut conn = TcpStream::connect(addr)?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    conn.write_all(request.as_bytes())?;
    conn.flush()?;
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer)?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed HTTP response");
    let head_end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let status = std::str::from_utf8(&answer[..head_end])
        .ok()
        .and_then(|h| h.strip_prefix("HTTP/1."))
        .and_then(|rest| rest.get(2..5))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(bad)?;
    Ok((status, answer.split_off(head_end + 4)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_request_with_a_body() {
        let raw = b"POST /x?a=1 HTTP/1.1\r\nHost: b\r\nContent-Length: 5\r\n\r\nhello";
        let req = read_request(&mut &raw[..]).unwrap();
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/x?a=1");
        assert_eq!(req.header("HOST"), Some("b"));
        assert_eq!(req.body, b"hello");
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for raw in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET nopath HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\ncontent-length: x\r\n\r\n",
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
        ] {
            assert!(
                matches!(read_request(&mut &raw[..]), Err(ReadError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        let big = format!("GET / HTTP/1.1\r\ncontent-length: {}\r\n\r\n", MAX_BODY + 1);
        assert!(matches!(
            read_request(&mut big.as_bytes()),
            Err(ReadError::TooLarge)
        ));
        let long_head = vec![b'a'; MAX_HEAD + 4096];
        assert!(matches!(
            read_request(&mut &long_head[..]),
            Err(ReadError::TooLarge)
        ));
    }

    #[test]
    fn serves_and_gets_over_a_real_socket() {
        let listener = TcpListener::bind_addr("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let mut conn = listener.accept().unwrap();
                handle(&mut conn, &mut |req: &Request| {
                    Response::text(200, format!("you asked for {}", req.path))
                });
            }
        });
        let (status, body) = get(addr, "/ready").unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, b"you asked for /ready");
        // A malformed request is answered 400, and the server carries on.
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.write_all(b"NONSENSE\r\n\r\n").unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
        server.join().unwrap();
    }
}
