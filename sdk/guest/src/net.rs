//! Blocking TCP for pods that serve a port or call out.
//!
//! `std::net` has no sockets on `wasm32-wasip1`, so on WASI this module
//! calls WASI 0.2 sockets (`wasi:sockets/tcp`) directly. Those exist only
//! in a **component**: build the pod for `wasm32-wasip2`, or for
//! `wasm32-wasip1` linked with `wasm-component-ld` (see
//! `examples/build.sh`). A core module that uses this module cannot be
//! instantiated (its `wasi:sockets` imports are unknown to preview 1).
//! Elsewhere (host builds, for tests) it is `std::net`.
//!
//! What the agent allows (docs/runtime.md, "Networking"):
//!
//! - listening only on the container's declared `ports` (TCP), at the
//!   board's address ([`listen_address`]);
//! - connecting only to the addresses the pod's `spec.egress` lists, and
//!   to its own ports on loopback. Anything else fails with
//!   [`std::io::ErrorKind::PermissionDenied`].
//!
//! ```no_run
//! use std::io::{Read, Write};
//! let listener = spoke_guest::net::TcpListener::bind(8080).unwrap();
//! // `None` once the agent asks the pod to stop (see `shutdown`).
//! while let Some(mut conn) = listener.accept_or_stop().unwrap() {
//!     let mut buf = [0u8; 1024];
//!     let n = conn.read(&mut buf).unwrap();
//!     conn.write_all(&buf[..n]).unwrap();
//! }
//! ```

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The environment variable in which the agent tells a container with
/// `ports` which address of the board it may listen on (`0.0.0.0`: any).
pub const LISTEN_ADDRESS_ENV: &str = "SPOKE_LISTEN_ADDRESS";

/// The address a pod should listen on: [`LISTEN_ADDRESS_ENV`] when the
/// agent set it, else `0.0.0.0` (all of the board's IPv4 addresses).
pub fn listen_address() -> IpAddr {
    std::env::var(LISTEN_ADDRESS_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// Where the pod's own server on `port` is reached from inside the pod
/// (e.g. by a probe hook): [`listen_address`], or loopback when that is
/// the unspecified address.
pub fn own_address(port: u16) -> SocketAddr {
    let ip = match listen_address() {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, port)
}

/// A listening TCP socket.
pub struct TcpListener(imp::Listener);

/// One TCP connection. Reads and writes block.
pub struct TcpStream(imp::Stream);

impl TcpListener {
    /// Listens on `port` at [`listen_address`].
    pub fn bind(port: u16) -> io::Result<TcpListener> {
        TcpListener::bind_addr(SocketAddr::new(listen_address(), port))
    }

    /// Listens on `addr`.
    pub fn bind_addr(addr: SocketAddr) -> io::Result<TcpListener> {
        imp::Listener::bind(addr).map(TcpListener)
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    /// Waits for the next connection.
    pub fn accept(&self) -> io::Result<TcpStream> {
        loop {
            if let Some(s) = self.0.accept(false)? {
                return Ok(TcpStream(s));
            }
        }
    }

    /// Waits for the next connection, or until the agent asks the pod to
    /// stop (its stdin closes): then `Ok(None)`, and the program should
    /// finish and return from `main`.
    pub fn accept_or_stop(&self) -> io::Result<Option<TcpStream>> {
        Ok(self.0.accept(true)?.map(TcpStream))
    }
}

impl TcpStream {
    /// Connects to `addr` (allowed only by the pod's `spec.egress`).
    pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        imp::Stream::connect(addr).map(TcpStream)
    }

    /// The other end.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.peer_addr()
    }
}

impl io::Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl io::Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(target_os = "wasi")]
mod imp {
    use std::io::{self, Read, Write};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

    use wasip2::cli::stdin;
    use wasip2::io::poll;
    use wasip2::io::streams::{InputStream, OutputStream};
    use wasip2::sockets::instance_network::instance_network;
    use wasip2::sockets::network::{
        ErrorCode, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, Ipv6SocketAddress,
    };
    use wasip2::sockets::tcp::TcpSocket;
    use wasip2::sockets::tcp_create_socket::create_tcp_socket;

    pub struct Listener {
        socket: TcpSocket,
    }

    pub struct Stream {
        // Field order is drop order: the streams are children of the socket
        // and must be dropped first.
        input: InputStream,
        output: OutputStream,
        socket: TcpSocket,
    }

    fn error(op: &str, addr: Option<SocketAddr>, e: ErrorCode) -> io::Error {
        use io::ErrorKind as K;
        let kind = match e {
            ErrorCode::AccessDenied => K::PermissionDenied,
            ErrorCode::AddressInUse => K::AddrInUse,
            ErrorCode::AddressNotBindable => K::AddrNotAvailable,
            ErrorCode::ConnectionRefused => K::ConnectionRefused,
            ErrorCode::ConnectionReset => K::ConnectionReset,
            ErrorCode::ConnectionAborted => K::ConnectionAborted,
            ErrorCode::Timeout => K::TimedOut,
            ErrorCode::InvalidArgument => K::InvalidInput,
            ErrorCode::NotSupported => K::Unsupported,
            ErrorCode::WouldBlock => K::WouldBlock,
            _ => K::Other,
        };
        let what = match addr {
            Some(a) => format!("{op} {a}"),
            None => op.to_string(),
        };
        io::Error::new(kind, format!("{what}: {}", e.name()))
    }

    fn to_wasi(addr: SocketAddr) -> IpSocketAddress {
        match addr {
            SocketAddr::V4(a) => {
                let [a0, a1, a2, a3] = a.ip().octets();
                IpSocketAddress::Ipv4(Ipv4SocketAddress {
                    port: a.port(),
                    address: (a0, a1, a2, a3),
                })
            }
            SocketAddr::V6(a) => {
                let s = a.ip().segments();
                IpSocketAddress::Ipv6(Ipv6SocketAddress {
                    port: a.port(),
                    flow_info: a.flowinfo(),
                    address: (s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
                    scope_id: a.scope_id(),
                })
            }
        }
    }

    fn from_wasi(addr: IpSocketAddress) -> SocketAddr {
        match addr {
            IpSocketAddress::Ipv4(a) => {
                let (a0, a1, a2, a3) = a.address;
                SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(a0, a1, a2, a3), a.port))
            }
            IpSocketAddress::Ipv6(a) => {
                let (s0, s1, s2, s3, s4, s5, s6, s7) = a.address;
                SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::new(s0, s1, s2, s3, s4, s5, s6, s7),
                    a.port,
                    a.flow_info,
                    a.scope_id,
                ))
            }
        }
    }

    fn new_socket(op: &str, addr: SocketAddr) -> io::Result<TcpSocket> {
        let family = if addr.is_ipv4() {
            IpAddressFamily::Ipv4
        } else {
            IpAddressFamily::Ipv6
        };
        create_tcp_socket(family).map_err(|e| error(op, Some(addr), e))
    }

    /// Calls `finish` until it stops saying `would-block`, waiting on the
    /// socket's pollable in between (WASI 0.2's start/finish pattern).
    fn finish<T>(
        socket: &TcpSocket,
        mut finish: impl FnMut() -> Result<T, ErrorCode>,
    ) -> Result<T, ErrorCode> {
        let pollable = socket.subscribe();
        loop {
            match finish() {
                Err(ErrorCode::WouldBlock) => pollable.block(),
                other => return other,
            }
        }
    }

    impl Listener {
        pub fn bind(addr: SocketAddr) -> io::Result<Listener> {
            let socket = new_socket("bind", addr)?;
            let network = instance_network();
            socket
                .start_bind(&network, to_wasi(addr))
                .map_err(|e| error("bind", Some(addr), e))?;
            finish(&socket, || socket.finish_bind()).map_err(|e| error("bind", Some(addr), e))?;
            socket
                .start_listen()
                .map_err(|e| error("listen", Some(addr), e))?;
            finish(&socket, || socket.finish_listen())
                .map_err(|e| error("listen", Some(addr), e))?;
            Ok(Listener { socket })
        }

        pub fn local_addr(&self) -> io::Result<SocketAddr> {
            self.socket
                .local_address()
                .map(from_wasi)
                .map_err(|e| error("local address", None, e))
        }

        /// `Ok(None)`: stdin closed while `or_stop`.
        pub fn accept(&self, or_stop: bool) -> io::Result<Option<Stream>> {
            let ready = self.socket.subscribe();
            let stdin = stdin::get_stdin();
            let stopped = stdin.subscribe();
            loop {
                match self.socket.accept() {
                    Ok((socket, input, output)) => {
                        return Ok(Some(Stream {
                            input,
                            output,
                            socket,
                        }));
                    }
                    Err(ErrorCode::WouldBlock) => {}
                    Err(e) => return Err(error("accept", None, e)),
                }
                if !or_stop {
                    ready.block();
                    continue;
                }
                let which = poll::poll(&[&ready, &stopped]);
                // The stop pollable is ready when stdin has data or ended;
                // the agent never writes to it, so ready means the end.
                if which.contains(&1) && stdin_closed(&stdin) {
                    return Ok(None);
                }
            }
        }
    }

    fn stdin_closed(stdin: &InputStream) -> bool {
        matches!(stdin.read(0), Err(wasip2::io::streams::StreamError::Closed))
    }

    impl Stream {
        pub fn connect(addr: SocketAddr) -> io::Result<Stream> {
            let socket = new_socket("connect", addr)?;
            let network = instance_network();
            socket
                .start_connect(&network, to_wasi(addr))
                .map_err(|e| error("connect", Some(addr), e))?;
            let (input, output) = finish(&socket, || socket.finish_connect())
                .map_err(|e| error("connect", Some(addr), e))?;
            Ok(Stream {
                input,
                output,
                socket,
            })
        }

        pub fn peer_addr(&self) -> io::Result<SocketAddr> {
            self.socket
                .remote_address()
                .map(from_wasi)
                .map_err(|e| error("peer address", None, e))
        }

        // The stream types have inherent `read`/`write` methods with other
        // signatures: name the `std::io` traits.
        pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            Read::read(&mut self.input, buf)
        }

        pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            Write::write(&mut self.output, buf)
        }

        pub fn flush(&mut self) -> io::Result<()> {
            Write::flush(&mut self.output)
        }
    }
}

#[cfg(not(target_os = "wasi"))]
mod imp {
    use std::io::{self, Read, Write};
    use std::net::SocketAddr;

    pub struct Listener(std::net::TcpListener);
    pub struct Stream(std::net::TcpStream);

    impl Listener {
        pub fn bind(addr: SocketAddr) -> io::Result<Listener> {
            std::net::TcpListener::bind(addr).map(Listener)
        }
        pub fn local_addr(&self) -> io::Result<SocketAddr> {
            self.0.local_addr()
        }
        /// On the host the stop signal is not watched while accepting.
        pub fn accept(&self, _or_stop: bool) -> io::Result<Option<Stream>> {
            self.0.accept().map(|(s, _)| Some(Stream(s)))
        }
    }

    impl Stream {
        pub fn connect(addr: SocketAddr) -> io::Result<Stream> {
            std::net::TcpStream::connect(addr).map(Stream)
        }
        pub fn peer_addr(&self) -> io::Result<SocketAddr> {
            self.0.peer_addr()
        }
        pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read(buf)
        }
        pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.write(buf)
        }
        pub fn flush(&mut self) -> io::Result<()> {
            self.0.flush()
        }
    }
}
