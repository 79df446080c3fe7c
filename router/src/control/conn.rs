//! Per-connection tasks: header, password flag, Noise handshake, then a
//! reader and a writer task. They make no protocol decision: the driver asks
//! the mesh, and these tasks only carry bytes and report what happened.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use meshnet_mesh::{
    ConnId, ConnInfo, HEADER_LEN, Header, Hello, MAX_MESSAGE_LEN, PublicKey, Refusal, Verdict,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tracing::{debug, info, warn};

use super::noise::{self, Authenticated, HANDSHAKE_TIMEOUT, HandshakeError, Psk};
use super::transport::{Opener, Sealer};

/// How many encoded messages may wait for one peer before we call it stalled.
pub const SEND_QUEUE: usize = 4096;
/// How long an outbound TCP connect may take.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

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
    Accept(mpsc::Receiver<Vec<u8>>),
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
    /// A decrypted message arrived.
    Message { conn: ConnId, bytes: Vec<u8> },
    /// An established connection ended.
    Closed { conn: ConnId, reason: String },
}

/// Where a connection task reports to.
pub type Reports = mpsc::UnboundedSender<ConnReport>;

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
            let _ = reports.send(ConnReport::DialFailed { target, error });
            return;
        }
        Err(_) => {
            let error = format!("dial tcp {addr}: timed out after {DIAL_TIMEOUT:?}");
            let _ = reports.send(ConnReport::DialFailed { target, error });
            return;
        }
    };
    let remote_addr = match stream.peer_addr() {
        Ok(a) => a,
        Err(e) => {
            let _ = reports.send(ConnReport::DialFailed {
                target,
                error: e.to_string(),
            });
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
    let outcome = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        handshake(&mut stream, &info, &local, &hello, conn, &reports),
    )
    .await
    .unwrap_or(Err((HandshakeError::Timeout(HANDSHAKE_TIMEOUT), false)));
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
            let _ = reports.send(report);
            return;
        }
    };
    pump(conn, stream, established, queue, reports).await;
}

/// A handshake failure, and whether the mesh had already registered the
/// connection (then the driver must hear that it closed).
type Failure = (HandshakeError, bool);

/// Header, password flag, Noise, and both verdicts.
async fn handshake(
    stream: &mut TcpStream,
    info: &ConnInfo,
    local: &Local,
    hello: &Hello,
    conn: ConnId,
    reports: &Reports,
) -> Result<(Authenticated, mpsc::Receiver<Vec<u8>>), Failure> {
    let early = |e: HandshakeError| (e, false);
    stream
        .write_all(&Header::OURS.encode())
        .await
        .map_err(|e| early(e.into()))?;
    let mut theirs = [0u8; HEADER_LEN];
    stream
        .read_exact(&mut theirs)
        .await
        .map_err(|e| early(e.into()))?;
    Header::negotiate(
        Header::OURS,
        Header::decode(&theirs).map_err(|e| early(e.into()))?,
    )
    .map_err(|e| early(e.into()))?;
    noise::exchange_password_flag(stream, local.psk.is_some())
        .await
        .map_err(early)?;

    let ask_mesh = |auth: &Authenticated, remote: Option<Verdict>| {
        let mut info = info.clone();
        info.remote_key = auth.remote_key;
        let hello = Box::new(auth.remote_hello.clone());
        async move {
            let (reply, answer) = oneshot::channel();
            let _ = reports.send(ConnReport::Handshaked {
                conn,
                info,
                hello,
                remote,
                reply,
            });
            answer.await.unwrap_or_else(|_| {
                Answer::Refuse(Refusal::new(
                    meshnet_mesh::RefusalCode::ShuttingDown,
                    "router is shutting down",
                ))
            })
        }
    };
    let refuse = |r: Refusal| (HandshakeError::RefusedByUs(r), false);

    if info.outbound {
        let (auth, theirs) = noise::initiate(stream, &local.private_key, local.psk.as_ref(), hello)
            .await
            .map_err(early)?;
        let peer = auth.remote_hello.name;
        match ask_mesh(&auth, Some(theirs.clone())).await {
            Answer::Accept(queue) => {
                auth.send_verdict(stream, &Verdict::Accepted)
                    .await
                    .map_err(|e| (e, true))?;
                Ok((auth, queue))
            }
            Answer::Refuse(r) => {
                let _ = auth
                    .send_verdict(stream, &Verdict::Refused(r.clone()))
                    .await;
                Err(refuse(r))
            }
            Answer::PeerRefused => {
                let refusal = match theirs {
                    Verdict::Refused(r) => r,
                    Verdict::Accepted => Refusal::new(
                        meshnet_mesh::RefusalCode::Unknown(0),
                        "refused without a reason",
                    ),
                };
                Err((HandshakeError::RefusedByPeer { peer, refusal }, false))
            }
        }
    } else {
        let auth = noise::respond(stream, &local.private_key, local.psk.as_ref(), hello)
            .await
            .map_err(early)?;
        let peer = auth.remote_hello.name;
        match ask_mesh(&auth, None).await {
            Answer::Accept(queue) => {
                auth.send_verdict(stream, &Verdict::Accepted)
                    .await
                    .map_err(|e| (e, true))?;
                match auth.read_verdict(stream).await {
                    Ok(Verdict::Accepted) => Ok((auth, queue)),
                    Ok(Verdict::Refused(refusal)) => {
                        Err((HandshakeError::RefusedByPeer { peer, refusal }, true))
                    }
                    Err(e) => Err((e, true)),
                }
            }
            Answer::Refuse(r) => {
                let _ = auth
                    .send_verdict(stream, &Verdict::Refused(r.clone()))
                    .await;
                Err(refuse(r))
            }
            Answer::PeerRefused => Err(refuse(Refusal::new(
                meshnet_mesh::RefusalCode::Unknown(0),
                "no verdict to believe on an inbound connection",
            ))),
        }
    }
}

/// Moves messages between the socket and the driver until either side ends.
async fn pump(
    conn: ConnId,
    stream: TcpStream,
    est: Authenticated,
    mut queue: mpsc::Receiver<Vec<u8>>,
    reports: Reports,
) {
    let transport = Arc::new(est.transport);
    let (rd, mut wr) = stream.into_split();
    let mut sealer = Sealer::new(transport.clone());
    let mut opener = Opener::new(transport, MAX_MESSAGE_LEN);
    let codec = LengthDelimitedCodec::builder()
        .length_field_length(2)
        .max_frame_length(noise::MAX_NOISE_MSG)
        .new_codec();
    let mut frames = FramedRead::new(rd, codec);

    let writer = async {
        let mut out = BytesMut::new();
        while let Some(msg) = queue.recv().await {
            out.clear();
            sealer.seal(&msg, &mut out).map_err(|e| e.to_string())?;
            // Batch whatever else is already queued into the same write.
            while out.len() < 256 * 1024 {
                match queue.try_recv() {
                    Ok(more) => sealer.seal(&more, &mut out).map_err(|e| e.to_string())?,
                    Err(_) => break,
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
        loop {
            let frame = match frames.next().await {
                Some(Ok(f)) => f,
                Some(Err(e)) => return format!("read: {e}"),
                None => return "connection closed by peer".to_string(),
            };
            match opener.open(&frame) {
                Ok(Some(bytes)) => {
                    if reports.send(ConnReport::Message { conn, bytes }).is_err() {
                        return "router is shutting down".to_string();
                    }
                }
                Ok(None) => {}
                Err(e) => return e.to_string(),
            }
        }
    };
    let reason = tokio::select! {
        r = writer => r.err().unwrap_or_default(),
        r = reader => r,
    };
    debug!(conn = conn.0, %reason, "connection ended");
    let _ = reports.send(ConnReport::Closed { conn, reason });
}
