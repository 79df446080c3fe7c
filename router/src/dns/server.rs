//! The DNS server's sockets: one UDP task answering in line (forwarded
//! queries get their own task) and one TCP listener with a task per
//! connection. Answers come from [`answer::answer`] over the published
//! [`Names`]; nothing here decides anything.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::op::ResponseCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::dns::answer::{self, MAX_UDP_REPLY, Names, Outcome, Transport, Zone};
use crate::dns::upstream::Upstream;

/// How long an idle TCP client may hold its connection.
pub const TCP_IDLE: Duration = Duration::from_secs(10);
/// Most TCP clients served at once (more wait in the kernel's backlog).
pub const MAX_TCP_CLIENTS: usize = 256;
/// Most forwarded UDP queries in flight; more are answered SERVFAIL.
pub const MAX_FORWARDS: usize = 1024;

/// Counters shared by the server tasks, read by metrics.
#[derive(Debug, Default)]
pub struct DnsMetrics {
    pub queries: AtomicU64,
    pub forwarded: AtomicU64,
    pub upstream_failures: AtomicU64,
    /// Replies by response code: NOERROR, FORMERR, SERVFAIL, NXDOMAIN,
    /// NOTIMP, REFUSED, other.
    pub rcodes: [AtomicU64; 7],
}

/// The rcode labels, in [`DnsMetrics::rcodes`] order.
pub const RCODES: [&str; 7] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "other",
];

impl DnsMetrics {
    fn count(&self, code: u8) {
        let i = usize::from(code).min(RCODES.len() - 1);
        self.rcodes[i].fetch_add(1, Ordering::Relaxed);
    }

    fn count_reply(&self, bytes: &[u8]) {
        if let Some(b) = bytes.get(3) {
            self.count(b & 0x0f);
        }
    }
}

/// What every server task shares.
#[derive(Debug)]
pub struct Ctx {
    pub names: Arc<ArcSwap<Names>>,
    pub zone: Zone,
    pub upstream: Upstream,
    pub metrics: Arc<DnsMetrics>,
}

impl Ctx {
    fn local(&self, query: &[u8], transport: Transport) -> Outcome {
        self.metrics.queries.fetch_add(1, Ordering::Relaxed);
        let names = self.names.load();
        let out = answer::answer(query, &names, &self.zone, transport, &mut rand::rng());
        if let Outcome::Reply(_, code) = &out {
            self.metrics.count(code.low());
        }
        out
    }

    /// Forwards upstream; SERVFAIL when every server failed.
    async fn forward(&self, query: &[u8], tcp: bool) -> Vec<u8> {
        self.metrics.forwarded.fetch_add(1, Ordering::Relaxed);
        let (reply, failed) = if tcp {
            self.upstream.forward_tcp(query).await
        } else {
            self.upstream.forward_udp(query).await
        };
        self.metrics
            .upstream_failures
            .fetch_add(failed, Ordering::Relaxed);
        match reply {
            Some(r) => {
                self.metrics.count_reply(&r);
                r
            }
            None => {
                self.metrics.count(ResponseCode::ServFail.low());
                answer::server_failure(query)
            }
        }
    }
}

/// Binds UDP and TCP on `addr` (the address may appear on an interface
/// later: IP_FREEBIND) and serves until `shutdown`.
pub fn start(addr: SocketAddr, ctx: Arc<Ctx>, shutdown: CancellationToken) -> std::io::Result<()> {
    let udp = bind_udp(addr)?;
    let tcp = bind_tcp(addr)?;
    let (c, s) = (ctx.clone(), shutdown.clone());
    tokio::spawn(async move {
        tokio::select! {
            () = serve_udp(udp, c) => {}
            () = s.cancelled() => {}
        }
    });
    tokio::spawn(async move {
        tokio::select! {
            () = serve_tcp(tcp, ctx) => {}
            () = shutdown.cancelled() => {}
        }
    });
    Ok(())
}

fn socket(addr: SocketAddr, ty: socket2::Type) -> std::io::Result<socket2::Socket> {
    let domain = socket2::Domain::for_address(addr);
    let s = socket2::Socket::new(domain, ty, None)?;
    s.set_reuse_address(true)?;
    if addr.is_ipv4() {
        s.set_freebind_v4(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = socket(addr, socket2::Type::DGRAM)?;
    UdpSocket::from_std(s.into())
}

fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = socket(addr, socket2::Type::STREAM)?;
    s.listen(128)?;
    TcpListener::from_std(s.into())
}

async fn serve_udp(sock: UdpSocket, ctx: Arc<Ctx>) {
    let sock = Arc::new(sock);
    let forwards = Arc::new(tokio::sync::Semaphore::new(MAX_FORWARDS));
    let mut buf = vec![0u8; MAX_UDP_REPLY];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                debug!(error = %e, "DNS UDP receive failed");
                continue;
            }
        };
        let query = &buf[..n];
        match ctx.local(query, Transport::Udp) {
            Outcome::Reply(bytes, _) => {
                if !bytes.is_empty() {
                    let _ = sock.send_to(&bytes, peer).await;
                }
            }
            Outcome::Forward => {
                let query = query.to_vec();
                let (ctx, sock) = (ctx.clone(), sock.clone());
                let Ok(permit) = forwards.clone().try_acquire_owned() else {
                    let _ = sock.send_to(&answer::server_failure(&query), peer).await;
                    continue;
                };
                tokio::spawn(async move {
                    let reply = ctx.forward(&query, false).await;
                    if !reply.is_empty() {
                        let _ = sock.send_to(&reply, peer).await;
                    }
                    drop(permit);
                });
            }
        }
    }
}

async fn serve_tcp(listener: TcpListener, ctx: Arc<Ctx>) {
    let clients = Arc::new(tokio::sync::Semaphore::new(MAX_TCP_CLIENTS));
    loop {
        let Ok(permit) = clients.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                warn!(error = %e, "DNS TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _ = serve_tcp_client(stream, &ctx).await;
            drop(permit);
        });
    }
}

async fn serve_tcp_client(mut s: TcpStream, ctx: &Ctx) -> std::io::Result<()> {
    loop {
        let Ok(len) = tokio::time::timeout(TCP_IDLE, s.read_u16()).await else {
            return Ok(());
        };
        let mut query = vec![0; usize::from(len?)];
        tokio::time::timeout(TCP_IDLE, s.read_exact(&mut query))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
        let reply = match ctx.local(&query, Transport::Tcp) {
            Outcome::Reply(bytes, _) => bytes,
            Outcome::Forward => ctx.forward(&query, true).await,
        };
        if reply.is_empty() {
            return Ok(());
        }
        let n = u16::try_from(reply.len()).unwrap_or(u16::MAX);
        s.write_all(&n.to_be_bytes()).await?;
        s.write_all(&reply[..usize::from(n)]).await?;
    }
}
