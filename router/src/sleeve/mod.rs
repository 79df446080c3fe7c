//! The I/O half of the sleeve datapath: a TAP port on the `meshnet` bridge and a
//! UDP socket on 6783, moved by two dedicated threads. Every decision (keys and their
//! rotation, the encryption check, forwarding and MAC learning, ttl, health, PMTU, ICMP and
//! fragmentation, the cut of a TSO frame to the path MTU) is made by the sans-IO
//! [`meshnet_mesh::sleeve::Endpoint`]; this module pumps bytes between it, the TAP and the
//! socket, batches them (UDP GSO/GRO, TSO split, TCP coalescing into the TAP) and counts.
//!
//! Layout:
//! - this file: [`Sleeve`], its config and status, the key handle API (random keys drawn here).
//! - [`port`]: opening the TAP and the UDP socket, bridge port setup (isolated).
//! - [`offload`], [`gro`]: splitting TSO super-frames from the TAP, coalescing TCP segments
//!   into it.
//! - `pump`: the two datapath loops, TAP → UDP (`sleeve-tx`, which also runs the endpoint's
//!   timers) and UDP → TAP (`sleeve-rx`, which also sends the relays and answers the endpoint
//!   asks for).
//!
//! Call protocol for the integrator: [`Sleeve::start`] once the bridge exists; publish a
//! [`Forwarding`] whenever routes change ([`Sleeve::set_forwarding`]); for every peer connection
//! send it [`Sleeve::new_recv_key`]'s hello over TCP and feed the hello it sends back to
//! [`Sleeve::handle_hello`] (a key is rotated the same way: a fresh `new_recv_key` hello, which
//! the peer's `handle_hello` takes as a re-key); [`Sleeve::forget_peer`] when the connection goes;
//! [`Sleeve::stop`] at shutdown (the TAP disappears with its fd).

pub mod gro;
pub mod offload;
pub mod port;
mod pump;

use std::collections::BTreeMap;
use std::net::{IpAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use meshnet_mesh::PeerName;
use meshnet_mesh::sleeve::wire::{ETH_LEN, OVERHEAD};
use meshnet_mesh::sleeve::{
    EncryptionMismatch, Endpoint, EndpointConfig, Forwarding, HelloOutcome, SleeveHello,
};
use ring::rand::{SecureRandom, SystemRandom};
use tracing::{debug, info};
use tun_rs::SyncDevice;

use crate::datapath::{DatapathError, Netns};

/// Default TAP name: `vethwe-` prefixed so `meshnet reset` sweeps it with weave's leftovers.
pub const TAP_NAME: &str = "vethwe-sleeve";
/// Default sleeve UDP port (weave's).
pub const UDP_PORT: u16 = 6783;

/// What the sleeve needs to start.
#[derive(Debug)]
pub struct SleeveConfig {
    /// The bridge the TAP joins (`meshnet`).
    pub bridge: String,
    /// The TAP's name (≤ 15 bytes).
    pub tap_name: String,
    /// UDP port to listen on.
    pub udp_port: u16,
    /// Overlay MTU (the TAP's and the bridge's).
    pub mtu: u32,
    /// Seal frames (a password is set); otherwise the inner part travels in clear.
    pub encrypt: bool,
    /// This host's peer name.
    pub local: PeerName,
    /// How long a receive key lives before it is rotated (capped at
    /// [`meshnet_mesh::sleeve::REKEY_AFTER_TIME`]).
    pub rekey_after: Duration,
    /// The namespace of the bridge; `None`: the current one.
    pub netns: Option<Netns>,
}

/// Why the sleeve could not start or take a hello.
#[derive(Debug, thiserror::Error)]
pub enum SleeveError {
    /// Kernel objects (namespace, bridge, netlink).
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// Opening the TAP or socket failed.
    #[error("sleeve: {op}: {source}")]
    Io {
        /// What we were doing.
        op: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The MTU does not fit an Ethernet underlay with our overhead.
    #[error(
        "sleeve MTU {mtu} is out of range: use 576..={max} so frames fit a 1500-byte underlay, or pass a smaller --mtu"
    )]
    BadMtu {
        /// The MTU asked for.
        mtu: u32,
        /// The largest that fits.
        max: u32,
    },
    /// The OS random number generator failed (no key can be made).
    #[error("sleeve: the OS random number generator failed; check /dev/urandom and getrandom(2)")]
    Rng,
    /// The peer wants a different encryption setting.
    #[error(transparent)]
    EncryptionMismatch(#[from] EncryptionMismatch),
}

/// Per-peer sleeve state for `status connections`.
pub use meshnet_mesh::sleeve::NeighbourStatus as SleevePeerStatus;

/// Sleeve-wide drop counters, by reason.
#[derive(Debug, Default)]
pub struct Counters {
    /// Packets with a key id we do not know (stale key, or not for us).
    pub unknown_key: AtomicU64,
    /// Packets whose tag did not verify.
    pub auth: AtomicU64,
    /// Replayed or too old.
    pub replay: AtomicU64,
    /// Undecodable headers.
    pub malformed: AtomicU64,
    /// Frames for a neighbour we have no key or address for.
    pub no_path: AtomicU64,
    /// Frames the forwarding decision dropped (ttl, no route, fastdp-served, ...).
    pub forward: AtomicU64,
    /// UDP send errors.
    pub send: AtomicU64,
    /// TAP write errors.
    pub tap_write: AtomicU64,
    /// Frames read from the TAP.
    pub tap_rx: AtomicU64,
    /// Frames written to the TAP.
    pub tap_tx: AtomicU64,
    /// Receive keys we replaced (a fresh one sent to a peer that had one).
    pub rekeys_sent: AtomicU64,
    /// Send keys a peer replaced (its fresh hello took over a working path).
    pub rekeys_received: AtomicU64,
}

/// A snapshot of [`Counters`] plus the kernel's socket drops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// See [`Counters`].
    pub unknown_key: u64,
    /// See [`Counters`].
    pub auth: u64,
    /// See [`Counters`].
    pub replay: u64,
    /// See [`Counters`].
    pub malformed: u64,
    /// See [`Counters`].
    pub no_path: u64,
    /// See [`Counters`].
    pub forward: u64,
    /// See [`Counters`].
    pub send: u64,
    /// See [`Counters`].
    pub tap_write: u64,
    /// See [`Counters`].
    pub tap_rx: u64,
    /// See [`Counters`].
    pub tap_tx: u64,
    /// See [`Counters`].
    pub rekeys_sent: u64,
    /// See [`Counters`].
    pub rekeys_received: u64,
    /// Datagrams the kernel dropped because our receive buffer was full.
    pub socket_drops: u64,
}

/// State shared by the handle and the two datapath threads.
pub(crate) struct Shared {
    pub(crate) endpoint: Endpoint,
    pub(crate) stop: AtomicBool,
    pub(crate) counters: Counters,
    pub(crate) tap: SyncDevice,
    pub(crate) udp: UdpSocket,
    pub(crate) udp_state: quinn_udp::UdpSocketState,
    /// The TAP has a virtio-net header on every frame.
    pub(crate) offload: bool,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A running sleeve.
pub struct Sleeve {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sleeve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sleeve")
            .field("endpoint", &self.shared.endpoint)
            .finish()
    }
}

/// The largest overlay MTU whose frames still fit a 1500-byte underlay.
pub const MAX_MTU: u32 = (1500 - OVERHEAD - ETH_LEN) as u32;

impl Sleeve {
    /// Creates the TAP and UDP socket inside the bridge's namespace, joins the TAP to the
    /// bridge (isolated port) and starts the datapath threads.
    pub async fn start(config: SleeveConfig) -> Result<Sleeve, SleeveError> {
        Sleeve::start_with_offload(config, true).await
    }

    /// [`Sleeve::start`], choosing whether to ask the kernel for TSO/USO super-frames and
    /// partial checksums on the TAP (IFF_VNET_HDR + TUNSETOFFLOAD; the sleeve splits them
    /// itself, ~4× in our measurements). `false` is for comparisons and old kernels.
    pub async fn start_with_offload(
        config: SleeveConfig,
        offload: bool,
    ) -> Result<Sleeve, SleeveError> {
        if !(576..=MAX_MTU).contains(&config.mtu) {
            return Err(SleeveError::BadMtu {
                mtu: config.mtu,
                max: MAX_MTU,
            });
        }
        let netns = match config.netns {
            Some(n) => n,
            None => Netns::current()?,
        };
        let (tap_name, mtu, port) = (config.tap_name.clone(), config.mtu, config.udp_port);

        let (tap, udp, udp_state) = netns
            .run("opening the sleeve TAP and UDP socket", move || {
                let tap =
                    port::open_tap(&tap_name, mtu, offload).map_err(|source| SleeveError::Io {
                        op: format!("creating TAP {tap_name}"),
                        source,
                    })?;
                let (udp, state) = port::open_udp(port).map_err(|source| SleeveError::Io {
                    op: format!("binding UDP port {port}"),
                    source,
                })?;
                Ok::<_, SleeveError>((tap, udp, state))
            })
            .await??;
        port::attach_port(&netns, &config.bridge, &config.tap_name, config.mtu).await?;
        let shared = Arc::new(Shared {
            endpoint: Endpoint::new(EndpointConfig {
                local: config.local,
                mtu: config.mtu,
                encrypt: config.encrypt,
                udp_port: config.udp_port,
                rekey_after: config.rekey_after,
            }),
            stop: AtomicBool::new(false),
            counters: Counters::default(),
            offload: tap.tcp_gso(),
            tap,
            udp,
            udp_state,
        });
        let mut threads = Vec::new();
        for (name, run) in [
            ("sleeve-tx", pump::tx_loop as fn(&Shared)),
            ("sleeve-rx", pump::rx_loop as fn(&Shared)),
        ] {
            let s = shared.clone();
            let t = std::thread::Builder::new()
                .name(name.into())
                .spawn(move || run(&s))
                .map_err(|source| SleeveError::Io {
                    op: format!("spawning thread {name}"),
                    source,
                })?;
            threads.push(t);
        }
        info!(
            tap = %config.tap_name,
            bridge = %config.bridge,
            port = config.udp_port,
            mtu = config.mtu,
            encrypt = config.encrypt,
            offload = shared.offload,
            gso_segments = shared.udp_state.max_gso_segments(),
            gro_segments = shared.udp_state.gro_segments(),
            "sleeve started"
        );
        Ok(Sleeve {
            shared,
            threads,
            rng: SystemRandom::new(),
        })
    }

    /// Publishes a new routing snapshot (cheap for the datapath: one atomic swap).
    pub fn set_forwarding(&self, forwarding: Forwarding) {
        self.shared.endpoint.set_forwarding(forwarding);
    }

    /// Makes a fresh receive key for frames *from* `peer` and returns the hello to send it.
    /// Older keys of that peer stay valid until a second newer one exists, so packets in
    /// flight during a re-key are not lost (this is also how a key is rotated).
    pub fn new_recv_key(&self, peer: PeerName) -> Result<SleeveHello, SleeveError> {
        let fill = |b: &mut [u8]| self.rng.fill(b).map_err(|_| SleeveError::Rng);
        let key = self
            .shared
            .endpoint
            .new_recv_key(peer, Instant::now(), fill)?;
        if key.replaced {
            bump(&self.shared.counters.rekeys_sent);
        }
        Ok(key.hello)
    }

    /// The peers whose receive key is due for rotation at `now` (old or used enough).
    pub fn keys_due(&self, now: Instant) -> Vec<PeerName> {
        self.shared.endpoint.keys_due(now)
    }

    /// When the next receive key is due for rotation by age.
    pub fn rotation_deadline(&self) -> Option<Instant> {
        self.shared.endpoint.rotation_deadline()
    }

    /// Installs `peer`'s hello: from now on frames for it are sealed with its key and sent to
    /// `remote_ip`:`hello.udp_port`; heartbeats and PMTU probing start. A hello for a peer we
    /// already send to at that address is a re-key: only the key changes, its health and path
    /// MTU carry over.
    pub fn handle_hello(
        &self,
        peer: PeerName,
        remote_ip: IpAddr,
        hello: &SleeveHello,
    ) -> Result<(), SleeveError> {
        let outcome = self
            .shared
            .endpoint
            .handle_hello(peer, remote_ip, hello, Instant::now())?;
        match outcome {
            HelloOutcome::Rekeyed => {
                bump(&self.shared.counters.rekeys_received);
                debug!(%peer, key_id = %hello.key_id, "sleeve send key rotated");
            }
            HelloOutcome::Up => {
                let addr = std::net::SocketAddr::new(remote_ip, hello.udp_port);
                info!(%peer, %addr, key_id = %hello.key_id, "sleeve peer up");
            }
        }
        Ok(())
    }

    /// Drops everything about `peer`: send path, receive keys, learned MACs, health.
    pub fn forget_peer(&self, peer: PeerName) {
        self.shared.endpoint.forget_peer(peer);
        info!(%peer, "sleeve peer down");
    }

    /// Source MACs not learned because the MAC table was at a limit.
    pub fn macs_refused(&self) -> u64 {
        self.shared.endpoint.macs_refused()
    }

    /// Per-peer status: every peer we can send to or receive from.
    pub fn status(&self) -> BTreeMap<PeerName, SleevePeerStatus> {
        self.shared.endpoint.status(Instant::now())
    }

    /// Sleeve-wide counters, including the kernel's receive-buffer drops.
    pub fn counters(&self) -> CounterSnapshot {
        let c = &self.shared.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CounterSnapshot {
            unknown_key: l(&c.unknown_key),
            auth: l(&c.auth),
            replay: l(&c.replay),
            malformed: l(&c.malformed),
            no_path: l(&c.no_path),
            forward: l(&c.forward),
            send: l(&c.send),
            tap_write: l(&c.tap_write),
            tap_rx: l(&c.tap_rx),
            tap_tx: l(&c.tap_tx),
            rekeys_sent: l(&c.rekeys_sent),
            rekeys_received: l(&c.rekeys_received),
            socket_drops: port::socket_drops(&self.shared.udp),
        }
    }

    /// Stops the threads (they notice within ~100 ms) and closes the TAP, which removes it.
    pub fn stop(mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        info!(peer = %self.shared.endpoint.config().local, "sleeve stopped");
    }
}

impl Drop for Sleeve {
    fn drop(&mut self) {
        // A dropped handle must not leave threads (and the TAP) behind.
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
