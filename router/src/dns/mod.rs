//! Service discovery (weaveDNS) inside the router: the sans-IO name table
//! ([`meshnet_mesh::dns::Dns`]) wired to the `dns` gossip channel and to
//! API requests, and the DNS server that answers from it.
//!
//! Layout: [`answer`] (one query → one reply, pure), [`upstream`]
//! (resolv.conf and forwarding), [`server`] (UDP and TCP sockets). After
//! every change the driver calls [`DnsService::drain`], which broadcasts
//! the delta and publishes a fresh [`Names`] index that the server tasks
//! read without locking.

pub mod answer;
pub mod server;
pub mod upstream;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hickory_proto::rr::Name;
use meshnet_mesh::dns::{self as table, Dns, EntryView};
use meshnet_mesh::{Mesh, PeerName};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use answer::Names;
pub use server::DnsMetrics;

/// The gossip channel name.
pub const CHANNEL: &str = table::CHANNEL;
/// weave's domain.
pub const DEFAULT_DOMAIN: &str = "weave.local.";
/// weave's TTL in code (its docs say 30 s; its code and status say 1 s):
/// short, so a dead container's address is not cached.
pub const DEFAULT_TTL: u32 = 1;
/// The port DNS clients use.
pub const DNS_PORT: u16 = 53;
/// weave's upstream timeout per server.
pub const DEFAULT_FALLBACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Where upstream servers come from by default.
pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";
/// The bridge whose address DNS listens on by default (as weave's script).
pub const DOCKER_BRIDGE: &str = "docker0";

/// DNS settings from `launch`.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Lowercase FQDN (`weave.local.`).
    pub domain: String,
    /// `--dns-listen-address`; `None`: docker0's address, port 53.
    pub listen: Option<SocketAddr>,
    pub ttl: u32,
    pub resolv_conf: PathBuf,
    pub fallback_timeout: Duration,
}

impl DnsConfig {
    /// weave's defaults.
    pub fn new() -> DnsConfig {
        DnsConfig {
            domain: DEFAULT_DOMAIN.into(),
            listen: None,
            ttl: DEFAULT_TTL,
            resolv_conf: DEFAULT_RESOLV_CONF.into(),
            fallback_timeout: DEFAULT_FALLBACK_TIMEOUT,
        }
    }
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig::new()
    }
}

/// Validates a `--dns-domain` value into a lowercase FQDN.
pub fn parse_domain(s: &str) -> Result<String, String> {
    table::normalize_name(s).map_err(|e| format!("invalid DNS domain {s:?}: {e}"))
}

/// An API answer: HTTP status code and body.
pub type Reply = oneshot::Sender<(u16, String)>;

/// Requests the HTTP API forwards to DNS (weave's `/name` routes).
#[derive(Debug)]
pub enum DnsRequest {
    /// `PUT /name/{container}/{ip}` with `fqdn`.
    Add {
        container: String,
        addr: Ipv4Addr,
        fqdn: String,
        reply: Reply,
    },
    /// `DELETE /name[/{container}[/{ip}]]` with optional `fqdn`.
    Remove {
        container: Option<String>,
        addr: Option<Ipv4Addr>,
        fqdn: Option<String>,
        reply: Reply,
    },
}

impl DnsRequest {
    /// Answers 404, as weave does with `--no-dns` (`dns-args` relies on it).
    pub fn refuse_disabled(self) {
        let (DnsRequest::Add { reply, .. } | DnsRequest::Remove { reply, .. }) = self;
        let _ = reply.send((
            404,
            "DNS is disabled: launch without --no-dns to use it\n".into(),
        ));
    }
}

/// What status, report and metrics show of DNS.
#[derive(Debug, Clone)]
pub struct DnsSnapshot {
    pub domain: String,
    /// Where the server listens, or why it does not.
    pub address: Result<SocketAddr, String>,
    pub upstream: Vec<SocketAddr>,
    pub ttl: u32,
    pub me: PeerName,
    pub entries: Vec<EntryView>,
    pub table: table::Counters,
    pub queries: u64,
    pub forwarded: u64,
    pub upstream_failures: u64,
    /// Replies by code, labelled as [`server::RCODES`].
    pub rcodes: Vec<(&'static str, u64)>,
}

/// DNS as the driver owns it.
#[derive(Debug)]
pub struct DnsService {
    dns: Dns,
    me: PeerName,
    domain: String,
    ttl: u32,
    address: Result<SocketAddr, String>,
    names: Arc<ArcSwap<Names>>,
    ctx: Option<Arc<server::Ctx>>,
    /// Set by the driver before each input: the `Channels` callbacks carry no time.
    now: Instant,
    dirty: bool,
}

/// docker0's IPv4 address, if the bridge exists in this namespace.
fn docker_bridge_addr() -> Option<Ipv4Addr> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|i| {
        (i.interface_name == DOCKER_BRIDGE)
            .then(|| i.address?.as_sockaddr_in().map(|s| s.ip()))
            .flatten()
    })
}

impl DnsService {
    /// Starts the server (when an address is known) and an empty table.
    pub fn start(
        cfg: DnsConfig,
        me: PeerName,
        shutdown: CancellationToken,
        now: Instant,
    ) -> DnsService {
        let names = Arc::new(ArcSwap::from_pointee(Names::default()));
        let listen = cfg
            .listen
            .or_else(|| docker_bridge_addr().map(|ip| SocketAddr::new(IpAddr::V4(ip), DNS_PORT)));
        let mut ctx = None;
        let address = match listen {
            None => Err(format!(
                "not serving: no {DOCKER_BRIDGE} bridge here; launch with --dns-listen-address IP[:PORT]"
            )),
            Some(addr) => {
                let c = Arc::new(server::Ctx {
                    names: names.clone(),
                    zone: answer::Zone {
                        domain: Name::from_ascii(&cfg.domain)
                            .unwrap_or_else(|_| Name::from_ascii(DEFAULT_DOMAIN).expect("literal")),
                        ttl: cfg.ttl,
                    },
                    upstream: upstream::Upstream::new(
                        cfg.resolv_conf.clone(),
                        addr.ip(),
                        cfg.fallback_timeout,
                    ),
                    metrics: Arc::new(DnsMetrics::default()),
                });
                match server::start(addr, c.clone(), shutdown) {
                    Ok(()) => {
                        info!(%addr, domain = %cfg.domain, "DNS server listening");
                        ctx = Some(c);
                        Ok(addr)
                    }
                    Err(e) => {
                        warn!(%addr, error = %e, "cannot serve DNS; names are still gossiped");
                        Err(format!(
                            "not serving: cannot listen on {addr}: {e} (is another DNS server there? choose another --dns-listen-address)"
                        ))
                    }
                }
            }
        };
        DnsService {
            dns: Dns::new(me),
            me,
            domain: cfg.domain,
            ttl: cfg.ttl,
            address,
            names,
            ctx,
            now,
            dirty: false,
        }
    }

    /// Sets the time the next `Channels` callbacks happen at.
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.dns.poll_timeout()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.dns.handle_timeout(now);
        self.dirty = true;
    }

    /// The mesh's peers changed: entries of peers that are gone go too.
    pub fn handle_peers(&mut self, mesh: &Mesh, now: Instant) {
        let known: BTreeSet<PeerName> = mesh
            .status(now)
            .peers
            .into_iter()
            .map(|p| p.name)
            .filter(|n| *n != self.me)
            .collect();
        let dropped = self.dns.handle_peers(known);
        if dropped > 0 {
            info!(
                entries = dropped,
                "dropped DNS entries of peers that are gone"
            );
            self.dirty = true;
        }
    }

    /// `rmpeer`: drops every entry of `peer`.
    pub fn forget_peer(&mut self, peer: PeerName) {
        let n = self.dns.forget_peer(peer);
        if n > 0 {
            info!(%peer, entries = n, "dropped DNS entries of a removed peer");
            self.dirty = true;
        }
    }

    /// `fqdn` as a name in our domain (a single label gets the domain).
    fn qualify(&self, fqdn: &str) -> Result<String, String> {
        let fqdn = fqdn.trim();
        let full = if !fqdn.trim_end_matches('.').contains('.') {
            format!("{}.{}", fqdn.trim_end_matches('.'), self.domain)
        } else {
            fqdn.to_string()
        };
        let n = table::normalize_name(&full).map_err(|e| e.to_string())?;
        if n == self.domain || !n.ends_with(&format!(".{}", self.domain)) {
            return Err(format!(
                "{n} is not in the DNS domain {d}: use a name ending in .{d} (or a single label)",
                d = self.domain
            ));
        }
        Ok(n)
    }

    /// Handles one API request.
    pub fn handle_request(&mut self, req: DnsRequest, now: Instant) {
        self.now = now;
        match req {
            DnsRequest::Add {
                container,
                addr,
                fqdn,
                reply,
            } => {
                let answer = match self.qualify(&fqdn) {
                    Err(e) => (400, format!("{e}\n")),
                    Ok(name) => match self.dns.add(&container, addr, &name, now) {
                        Ok(changed) => {
                            if changed {
                                info!(%name, %addr, %container, "DNS name added");
                            }
                            (204, String::new())
                        }
                        Err(e) => (400, format!("{e}\n")),
                    },
                };
                self.dirty = true;
                let _ = reply.send(answer);
            }
            DnsRequest::Remove {
                container,
                addr,
                fqdn,
                reply,
            } => {
                let name = match fqdn.as_deref().map(|f| self.qualify(f)).transpose() {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = reply.send((400, format!("{e}\n")));
                        return;
                    }
                };
                let n = self
                    .dns
                    .remove(container.as_deref(), addr, name.as_deref(), now);
                if n > 0 {
                    info!(container = ?container, entries = n, "DNS names removed");
                }
                self.dirty = true;
                let _ = reply.send((204, String::new()));
            }
        }
    }

    /// A container died: its names go (tombstoned everywhere).
    pub fn container_died(&mut self, container: &str, now: Instant) -> usize {
        let n = self.dns.remove(Some(container), None, None, now);
        if n > 0 {
            info!(%container, entries = n, "DNS names of a dead container removed");
            self.dirty = true;
        }
        n
    }

    pub fn snapshot(&self) -> DnsSnapshot {
        let m = self
            .ctx
            .as_ref()
            .map(|c| c.metrics.clone())
            .unwrap_or_default();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        DnsSnapshot {
            domain: self.domain.clone(),
            address: self.address.clone(),
            upstream: self
                .ctx
                .as_ref()
                .map(|c| c.upstream.servers())
                .unwrap_or_default(),
            ttl: self.ttl,
            me: self.me,
            entries: self.dns.entries(),
            table: self.dns.counters(),
            queries: load(&m.queries),
            forwarded: load(&m.forwarded),
            upstream_failures: load(&m.upstream_failures),
            rcodes: server::RCODES
                .iter()
                .zip(&m.rcodes)
                .map(|(l, c)| (*l, load(c)))
                .collect(),
        }
    }

    /// Broadcasts what changed and publishes the new index for the server.
    pub fn drain(&mut self, mesh: &mut Mesh) {
        while let Some(delta) = self.dns.poll_transmit() {
            mesh.gossip_broadcast(CHANNEL, delta);
            self.dirty = true;
        }
        if std::mem::take(&mut self.dirty) {
            self.names.store(Arc::new(self.index()));
        }
    }

    fn index(&self) -> Names {
        let mut names = Names::default();
        for e in self.dns.entries().into_iter().filter(|e| !e.tombstone) {
            let addrs = names.by_name.entry(e.name.clone()).or_default();
            if !addrs.contains(&e.addr) {
                addrs.push(e.addr);
            }
            if let Ok(n) = Name::from_ascii(&e.name) {
                names.by_addr.entry(e.addr).or_insert(n);
            }
        }
        names
    }

    /// The channel's full state.
    pub fn full_state(&self) -> Vec<u8> {
        self.dns.full_state()
    }

    /// Gossip received on the channel; returns what to relay.
    pub fn on_gossip(&mut self, src: PeerName, payload: &[u8]) -> Result<Option<Vec<u8>>, String> {
        self.dirty = true;
        self.dns
            .handle_gossip(src, payload, self.now)
            .map_err(|e| self.refused(src, e))
    }

    /// A broadcast received on the channel.
    pub fn on_broadcast(&mut self, src: PeerName, payload: &[u8]) -> Result<(), String> {
        self.dirty = true;
        self.dns
            .handle_broadcast(src, payload, self.now)
            .map_err(|e| self.refused(src, e))
    }

    fn refused(&self, src: PeerName, e: table::WireError) -> String {
        warn!(peer = %src, error = %e, "dropping DNS gossip");
        e.to_string()
    }
}
