//! Per-connection tasks: header, password flag, Noise handshake, then a
//! reader and a writer task. They make no protocol decision: the driver asks
//! the mesh, and these tasks only carry bytes and report what happened.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meshnet_mesh::handshake::{
    Decision, Handshake, HandshakeConfig, HandshakeError, HandshakeEvent, Psk, Session,
};
use meshnet_mesh::{ConnId, ConnInfo, Hello, PublicKey, Refusal, Verdict};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tracing::{debug, info, warn};

/// Bytes of encoded messages that may wait for one peer before we call it stalled and drop
/// the connection: four messages of the largest size, so a peer that reads at all is never
/// dropped for a burst of full-state gossip, while one that stopped reading costs us at most
/// this much memory.
pub const MAX_QUEUED_BYTES_PER_CONN: usize = 4 * meshnet_mesh::MAX_MESSAGE_LEN;
/// Bytes of received messages of one connection that may wait for the driver. When they are
/// all taken the reader stops reading that socket (TCP pushes back on the sender) until the
/// driver has handled some: a flooding peer slows only itself. Two of the largest messages, so
/// one can be handled while the next is read.
pub const MAX_UNPROCESSED_BYTES_PER_CONN: usize = 2 * meshnet_mesh::MAX_MESSAGE_LEN;
/// What each queued message costs on top of its bytes (its allocation and queue slot), so a
/// flood of empty messages is bounded too.
pub const QUEUED_MESSAGE_OVERHEAD: usize = 64;
/// Reports from all connection tasks that may wait for the driver; a task waits when it is
/// full (the per-connection byte budgets keep one connection from holding all of it long).
pub const REPORT_QUEUE: usize = 4096;
/// How long an outbound TCP connect may take.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from the socket at a time.
const READ_BUF: usize = 64 * 1024;
/// Sealed messages batched into one socket write, at most (more wait for the next write).
const WRITE_BATCH: usize = 256 * 1024;

/// What every connection task needs to know about us.
#[derive(Debug)]
pub struct Local {
    pub private_key: Vec<u8>,
    pub psk: Option<Psk>,
    /// `--trusted-subnets`: peers there may get unencrypted fast datapath.
    pub trusted_subnets: Vec<ipnet::IpNet>,
}

impl Local {
    /// Whether we trust a peer at this address (weave §4.4).
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_subnets.iter().any(|n| n.contains(&ip))
    }
}

/// The driver's answer to [`ConnReport::Handshaked`].
#[derive(Debug)]
pub enum Answer {
    /// The mesh registered the connection: send "accepted" and pump this queue.
    Accept(QueueReader),
    /// We refuse: send this refusal (sealed) and close.
    Refuse(Refusal),
    /// The peer refused us and the mesh believes it (it passed our checks): close.
    PeerRefused,
}

/// Reports from connection tasks to the driver.
#[derive(Debug)]
pub enum ConnReport {
    /// The handshake authenticated both ends. The driver asks the mesh
    /// (`handle_connection`, or `handle_refused` when the responder's verdict
    /// in `remote` refused us) and answers.
    Handshaked {
        conn: ConnId,
        info: ConnInfo,
        hello: Box<Hello>,
        remote: Option<Verdict>,
        reply: oneshot::Sender<Answer>,
    },
    /// An outbound attempt failed before the connection was added.
    DialFailed { target: String, error: String },
    /// An inbound attempt failed during the handshake.
    InboundFailed { addr: SocketAddr, error: String },
    /// A decrypted message arrived. `budget` holds its share of the connection's
    /// [`MAX_UNPROCESSED_BYTES_PER_CONN`]; dropping the report returns it.
    Message {
        conn: ConnId,
        bytes: Vec<u8>,
        budget: OwnedSemaphorePermit,
    },
    /// An established connection ended.
    Closed { conn: ConnId, reason: String },
}

/// Where a connection task reports to (bounded by [`REPORT_QUEUE`]).
pub type Reports = mpsc::Sender<ConnReport>;

/// A new reports channel.
pub fn reports() -> (Reports, mpsc::Receiver<ConnReport>) {
    mpsc::channel(REPORT_QUEUE)
}

/// What a message costs in a queue's byte budget.
fn cost(len: usize) -> usize {
    len.saturating_add(QUEUED_MESSAGE_OVERHEAD)
}

/// The driver's end of one connection's send queue, counted in bytes. Dropping it ends the
/// connection, even while a write is blocked on a peer that stopped reading.
#[derive(Debug)]
pub struct SendQueue {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    limit: usize,
    _close: tokio_util::sync::DropGuard,
}

/// The writer task's end of a [`SendQueue`].
#[derive(Debug)]
pub struct QueueReader {
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    closed: tokio_util::sync::CancellationToken,
}

/// Why a message could not be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The peer does not read fast enough: the queue holds `limit` bytes already.
    #[error(
        "send queue full: {queued} bytes wait for the peer and {more} more would pass the limit of {limit}; the peer stopped reading"
    )]
    Full {
        queued: usize,
        more: usize,
        limit: usize,
    },
    /// The writer task has ended.
    #[error("connection task ended")]
    Closed,
}

/// A send queue that holds at most `limit` bytes (see [`MAX_QUEUED_BYTES_PER_CONN`]).
pub fn send_queue(limit: usize) -> (SendQueue, QueueReader) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let closed = tokio_util::sync::CancellationToken::new();
    let reader = QueueReader {
        rx,
        queued: queued.clone(),
        closed: closed.clone(),
    };
    let queue = SendQueue {
        tx,
        queued,
        limit,
        _close: closed.drop_guard(),
    };
    (queue, reader)
}

impl SendQueue {
    /// Queues `bytes`, or refuses when that would pass the byte limit.
    pub fn push(&self, bytes: Vec<u8>) -> Result<(), SendError> {
        let more = cost(bytes.len());
        let queued = self.queued.load(Ordering::Acquire);
        if queued.saturating_add(more) > self.limit {
            return Err(SendError::Full {
                queued,
                more,
                limit: self.limit,
            });
        }
        // Only the driver adds, so the check above cannot race another push.
        self.queued.fetch_add(more, Ordering::AcqRel);
        self.tx.send(bytes).map_err(|_| SendError::Closed)
    }

    /// Bytes waiting (with their overhead).
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Ends the connection once what is queued has been written, not before (a clean
    /// shutdown: a `reset`'s IP space handover must reach the peers). The returned token
    /// ends it at once when cancelled, for a peer that does not read.
    pub fn finish(self) -> tokio_util::sync::CancellationToken {
        let SendQueue { tx, _close, .. } = self;
        drop(tx);
        _close.disarm()
    }
}

impl QueueReader {
    fn taken(&self, msg: &[u8]) {
        self.queued.fetch_sub(cost(msg.len()), Ordering::AcqRel);
    }

    /// The next message; `None` when the driver dropped the queue.
    async fn recv(&mut self) -> Option<Vec<u8>> {
        let msg = self.rx.recv().await?;
        self.taken(&msg);
        Some(msg)
    }

    fn try_recv(&mut self) -> Option<Vec<u8>> {
        let msg = self.rx.try_recv().ok()?;
        self.taken(&msg);
        Some(msg)
    }
}

/// Dials `addr` for `target` and runs the connection.
pub async fn dial(
    conn: ConnId,
    target: String,
    addr: String,
    local: Arc<Local>,
    hello: Hello,
    reports: Reports,
) {
    let stream = match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(&addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let error = format!("dial tcp {addr}: {e}");
            let _ = reports.send(ConnReport::DialFailed { target, error }).await;
            return;
        }
        Err(_) => {
            let error = format!("dial tcp {addr}: timed out after {DIAL_TIMEOUT:?}");
            let _ = reports.send(ConnReport::DialFailed { target, error }).await;
            return;
        }
    };
    let remote_addr = match stream.peer_addr() {
        Ok(a) => a,
        Err(e) => {
            let _ = reports
                .send(ConnReport::DialFailed {
                    target,
                    error: e.to_string(),
                })
                .await;
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    let info = ConnInfo {
        outbound: true,
        remote_addr,
        target: Some(target.clone()),
        local_conn_half: hello.conn_half,
        remote_key: PublicKey([0; 32]),
    };
    run(conn, stream, info, local, hello, reports, Some(target)).await;
}

/// Runs an accepted connection.
pub async fn accept(
    conn: ConnId,
    stream: TcpStream,
    remote_addr: SocketAddr,
    local: Arc<Local>,
    hello: Hello,
    reports: Reports,
) {
    let _ = stream.set_nodelay(true);
    let info = ConnInfo {
        outbound: false,
        remote_addr,
        target: None,
        local_conn_half: hello.conn_half,
        remote_key: PublicKey([0; 32]),
    };
    run(conn, stream, info, local, hello, reports, None).await;
}

async fn run(
    conn: ConnId,
    mut stream: TcpStream,
    info: ConnInfo,
    local: Arc<Local>,
    mut hello: Hello,
    reports: Reports,
    target: Option<String>,
) {
    let remote_addr = info.remote_addr;
    hello.trusted = local.trusts(remote_addr.ip());
    let fail = |error: String| match &target {
        Some(t) => ConnReport::DialFailed {
            target: t.clone(),
            error,
        },
        None => ConnReport::InboundFailed {
            addr: remote_addr,
            error,
        },
    };
    let outcome = handshake(&mut stream, &info, &local, hello, conn, &reports).await;
    let (established, queue) = match outcome {
        Ok(v) => v,
        Err((e, registered)) => {
            if target.is_none() || e.is_refusal() {
                warn!(peer_addr = %remote_addr, error = %e, "connection refused");
            } else {
                info!(peer_addr = %remote_addr, error = %e, "connection attempt failed");
            }
            let report = if registered {
                ConnReport::Closed {
                    conn,
                    reason: e.to_string(),
                }
            } else {
                fail(e.to_string())
            };
            let _ = reports.send(report).await;
            return;
        }
    };
    pump(conn, stream, *established, queue, reports).await;
}

/// Why a connection ended before it was established.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Handshake(#[from] HandshakeError),
}

impl Failure {
    fn is_refusal(&self) -> bool {
        matches!(self, Failure::Handshake(e) if e.is_refusal())
    }
}

/// A handshake failure, and whether the mesh had already registered the
/// connection (then the driver must hear that it closed).
type Failed = (Failure, bool);

/// Drives the sans-IO [`Handshake`]: writes what it sends, reads what it asks for, asks the
/// driver (and so the mesh) when it has authenticated the peer, and times it out.
async fn handshake(
    stream: &mut TcpStream,
    info: &ConnInfo,
    local: &Local,
    hello: Hello,
    conn: ConnId,
    reports: &Reports,
) -> Result<(Box<Session>, QueueReader), Failed> {
    let config = HandshakeConfig {
        private_key: local.private_key.clone(),
        psk: local.psk.clone(),
        hello,
        outbound: info.outbound,
        seed: rand::random(),
    };
    let mut hs = Handshake::new(config, std::time::Instant::now());
    let mut buf = vec![0u8; READ_BUF];
    let mut queue = None;
    loop {
        let mut written = Ok(());
        while let Some(bytes) = hs.poll_transmit() {
            if written.is_ok() {
                written = stream.write_all(&bytes).await;
            }
        }
        match hs.poll_event() {
            Some(HandshakeEvent::Authenticated {
                remote_hello,
                remote_key,
                remote_verdict,
            }) => {
                let mut info = info.clone();
                info.remote_key = remote_key;
                let (reply, answer) = oneshot::channel();
                let _ = reports
                    .send(ConnReport::Handshaked {
                        conn,
                        info,
                        hello: remote_hello,
                        remote: remote_verdict,
                        reply,
                    })
                    .await;
                let deadline = deadline(&hs);
                let answer = tokio::select! {
                    a = answer => a.unwrap_or_else(|_| Answer::Refuse(Refusal::new(
                        meshnet_mesh::RefusalCode::ShuttingDown,
                        "router is shutting down",
                    ))),
                    () = tokio::time::sleep_until(deadline) => {
                        hs.handle_timeout(std::time::Instant::now());
                        continue;
                    }
                };
                let decision = match answer {
                    Answer::Accept(q) => {
                        queue = Some(q);
                        Decision::Accept
                    }
                    Answer::Refuse(r) => Decision::Refuse(r),
                    Answer::PeerRefused => Decision::PeerRefused,
                };
                hs.handle_decision(decision, std::time::Instant::now());
                continue;
            }
            Some(HandshakeEvent::Established(session)) => {
                written.map_err(|e| (e.into(), true))?;
                let queue = queue.ok_or_else(|| {
                    let e = std::io::Error::other("established without the driver's queue");
                    (e.into(), false)
                })?;
                return Ok((session, queue));
            }
            Some(HandshakeEvent::Failed { error, registered }) => {
                return Err((error.into(), registered));
            }
            None => {}
        }
        written.map_err(|e| (e.into(), queue.is_some()))?;
        let read = tokio::select! {
            r = stream.read(&mut buf) => r,
            () = tokio::time::sleep_until(deadline(&hs)) => {
                hs.handle_timeout(std::time::Instant::now());
                continue;
            }
        };
        match read {
            Ok(0) => {
                let e = std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed by peer during the handshake",
                );
                return Err((e.into(), queue.is_some()));
            }
            Ok(n) => hs.handle_input(&buf[..n], std::time::Instant::now()),
            Err(e) => return Err((e.into(), queue.is_some())),
        }
    }
}

/// When the handshake times out, for tokio (far away once it has ended, which the loop sees
/// first).
fn deadline(hs: &Handshake) -> tokio::time::Instant {
    let at = hs
        .poll_timeout()
        .unwrap_or_else(|| std::time::Instant::now() + Duration::from_secs(3600));
    tokio::time::Instant::from_std(at)
}

/// Moves messages between the socket and the driver until either side ends.
async fn pump<S: AsyncRead + AsyncWrite>(
    conn: ConnId,
    stream: S,
    session: Session,
    mut queue: QueueReader,
    reports: Reports,
) {
    let Session {
        mut sealer,
        mut opener,
    } = session;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let closed = queue.closed.clone();
    let budget = Arc::new(Semaphore::new(MAX_UNPROCESSED_BYTES_PER_CONN));

    let writer = async {
        let mut out = Vec::new();
        while let Some(msg) = queue.recv().await {
            out.clear();
            sealer.seal(&msg, &mut out).map_err(|e| e.to_string())?;
            // Batch whatever else is already queued into the same write.
            while out.len() < WRITE_BATCH {
                match queue.try_recv() {
                    Some(more) => sealer.seal(&more, &mut out).map_err(|e| e.to_string())?,
                    None => break,
                }
            }
            wr.write_all(&out)
                .await
                .map_err(|e| format!("write: {e}"))?;
        }
        // The driver dropped the queue: it closed this connection.
        let _ = wr.shutdown().await;
        Err::<(), String>("closed by us".to_string())
    };
    let reader = async {
        let mut buf = vec![0u8; READ_BUF];
        loop {
            // Bytes that came with the handshake's last frame are in the opener already.
            while let Some(message) = opener.poll_message() {
                match message {
                    Ok(bytes) => {
                        // Waits (and so stops reading the socket) while the driver holds
                        // this connection's whole budget.
                        let want = cost(bytes.len()).min(MAX_UNPROCESSED_BYTES_PER_CONN);
                        let want = u32::try_from(want).unwrap_or(u32::MAX);
                        let Ok(held) = budget.clone().acquire_many_owned(want).await else {
                            return "router is shutting down".to_string();
                        };
                        let report = ConnReport::Message {
                            conn,
                            bytes,
                            budget: held,
                        };
                        if reports.send(report).await.is_err() {
                            return "router is shutting down".to_string();
                        }
                    }
                    Err(e) => return e.to_string(),
                }
            }
            match rd.read(&mut buf).await {
                Ok(0) => return "connection closed by peer".to_string(),
                Ok(n) => opener.handle_input(&buf[..n]),
                Err(e) => return format!("read: {e}"),
            }
        }
    };
    let reason = tokio::select! {
        r = writer => r.err().unwrap_or_default(),
        r = reader => r,
        // The driver closed it while the writer waits on a peer that does not read.
        () = closed.cancelled() => "closed by us".to_string(),
    };
    debug!(conn = conn.0, %reason, "connection ended");
    let _ = reports.send(ConnReport::Closed { conn, reason }).await;
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;
