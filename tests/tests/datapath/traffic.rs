//! Traffic for the datapath scenarios: commands and sockets inside container
//! namespaces (`ip netns exec`, threads that `setns`), pings, TCP transfers
//! digested by `sha256sum` at both ends, and a `tcpdump` capture of a host's
//! underlay with a minimal pcap reader.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meshnet_tests::{Host, wait_for};
pub use meshnet_tests::{join, ns_exec, spawn_in};

/// Bound on the first ping across the mesh getting an answer.
pub const FIRST_PING: Duration = Duration::from_secs(60);
/// A TCP transfer fails if no byte moves for this long (never a speed assertion).
pub const STALL: Duration = Duration::from_secs(60);
/// Port the TCP receivers listen on inside containers.
pub const TCP_PORT: u16 = 7000;

/// A network namespace attached to a host's `meshnet` bridge.
#[derive(Debug, Clone)]
pub struct Container {
    pub netns: String,
    pub ip: Ipv4Addr,
}

/// One ping from `from` to `to`, waiting at most a second.
pub fn ping_once(from: &Container, to: Ipv4Addr) -> Result<(), String> {
    let out = ns_exec(
        &from.netns,
        &["ping", "-n", "-c", "1", "-W", "1", &to.to_string()],
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Answers [`assert_pings`] wants after the first.
pub const MORE_PINGS: usize = 3;

/// Waits for a first answer (ARP, FDB and overlay warm up), then for
/// [`MORE_PINGS`] more answered pings, each retried until it is answered
/// within [`FIRST_PING`] (a lost ping on a loaded machine is no failure; a
/// path that stops answering is).
pub fn assert_pings(from: &Container, to: &Container) {
    wait_for(
        &format!("{} to answer a ping from {}", to.ip, from.ip),
        FIRST_PING,
        || ping_once(from, to.ip),
    );
    let mut answered = 0;
    wait_for(
        &format!(
            "{} to answer {MORE_PINGS} more pings from {}",
            to.ip, from.ip
        ),
        FIRST_PING,
        || {
            ping_once(from, to.ip)?;
            answered += 1;
            if answered >= MORE_PINGS {
                Ok(())
            } else {
                Err(format!("{answered} answered"))
            }
        },
    );
}

/// A running `sha256sum` fed through its stdin.
pub struct Sha256 {
    child: Child,
}

impl Sha256 {
    pub fn new() -> Sha256 {
        let child = Command::new("sha256sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("running sha256sum (coreutils)");
        Sha256 { child }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.child
            .stdin
            .as_mut()
            .expect("sha256sum stdin")
            .write_all(data)
            .expect("feeding sha256sum");
    }

    /// The hex digest.
    pub fn finish(mut self) -> String {
        drop(self.child.stdin.take());
        let out = self
            .child
            .wait_with_output()
            .expect("waiting for sha256sum");
        let text = String::from_utf8_lossy(&out.stdout);
        let hex = text.split_whitespace().next().unwrap_or("").to_owned();
        assert_eq!(hex.len(), 64, "sha256sum printed {text:?}");
        hex
    }
}

/// Deterministic pseudo-random bytes (xorshift64*): incompressible enough for
/// a transfer test, reproducible from the seed printed on failure.
pub struct Bytes(u64);

impl Bytes {
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// What one side of a transfer saw.
#[derive(Debug, PartialEq, Eq)]
pub struct Digest {
    pub bytes: u64,
    pub sha256: String,
}

/// How much a sender sends: a fixed amount, or paced chunks until `stop`.
pub enum Amount {
    Exactly(u64),
    UntilStopped {
        stop: Arc<AtomicBool>,
        pace: Duration,
    },
}

/// Starts a receiver in `to` (listening before this returns): it accepts one
/// connection, reads to EOF while counting into `progress`, and returns the
/// digest of what it read.
pub fn start_receiver(to: &Container, progress: Arc<AtomicU64>) -> JoinHandle<Digest> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let handle = spawn_in(&to.netns, move || {
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, TCP_PORT)).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        ready_tx.send(()).expect("signal ready");
        let deadline = Instant::now() + STALL;
        let mut stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("receiver: no connection within {STALL:?}: {e}"),
            }
        };
        stream.set_nonblocking(false).expect("blocking");
        stream.set_read_timeout(Some(STALL)).expect("timeout");
        let mut sha = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut bytes = 0u64;
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    sha.update(&buf[..n]);
                    bytes += n as u64;
                    progress.store(bytes, Ordering::Relaxed);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("receiver: read failed after {bytes} bytes: {e}"),
            }
        }
        Digest {
            bytes,
            sha256: sha.finish(),
        }
    });
    ready_rx
        .recv_timeout(STALL)
        .expect("receiver thread did not start listening");
    handle
}

/// Starts a sender in `from` that connects to `to`, sends `amount` seeded
/// bytes, closes, and returns the digest of what it sent.
pub fn start_sender(
    from: &Container,
    to: Ipv4Addr,
    amount: Amount,
    seed: u64,
) -> JoinHandle<Digest> {
    spawn_in(&from.netns, move || {
        let addr = SocketAddr::V4(SocketAddrV4::new(to, TCP_PORT));
        let deadline = Instant::now() + STALL;
        let mut stream = loop {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    panic!("sender: cannot connect to {addr} (seed {seed}): {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        stream.set_write_timeout(Some(STALL)).expect("timeout");
        let mut data = Bytes(seed | 1);
        let mut sha = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut bytes = 0u64;
        loop {
            let n = match &amount {
                Amount::Exactly(total) => (*total - bytes).min(buf.len() as u64) as usize,
                Amount::UntilStopped { stop, pace } => {
                    if stop.load(Ordering::Relaxed) {
                        0
                    } else {
                        std::thread::sleep(*pace);
                        buf.len()
                    }
                }
            };
            if n == 0 {
                break;
            }
            data.fill(&mut buf[..n]);
            stream.write_all(&buf[..n]).unwrap_or_else(|e| {
                panic!("sender: write failed after {bytes} bytes (seed {seed}): {e}")
            });
            sha.update(&buf[..n]);
            bytes += n as u64;
        }
        stream
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown");
        Digest {
            bytes,
            sha256: sha.finish(),
        }
    })
}

/// Sends `bytes` from `from` to `to` over TCP and asserts both ends computed
/// the same SHA-256 over the same number of bytes.
pub fn assert_tcp_transfer(from: &Container, to: &Container, bytes: u64) {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let receiver = start_receiver(to, Arc::new(AtomicU64::new(0)));
    let sender = start_sender(from, to.ip, Amount::Exactly(bytes), seed);
    let sent = join(sender);
    let received = join(receiver);
    assert_eq!(sent.bytes, bytes, "seed {seed}");
    assert_eq!(
        sent, received,
        "TCP transfer {} -> {} corrupted (seed {seed})",
        from.ip, to.ip
    );
    eprintln!(
        "{} -> {}: {bytes} bytes, sha256 {} at both ends",
        from.ip, to.ip, sent.sha256
    );
}

/// The interface holding `host`'s first underlay address.
pub fn underlay_if(host: &Host) -> String {
    let out = host
        .exec(&["ip", "-o", "-4", "addr", "show"])
        .expect("ip addr");
    let want = format!("inet {}/", host.addr());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains(&want))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no interface with {} on {}", host.addr(), host.name()))
}

/// A `tcpdump` writing everything on one interface of a host to a pcap file;
/// killed on drop.
pub struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    /// Starts capturing on `host`'s underlay and waits until tcpdump listens.
    pub fn start(host: &Host, dir: &Path) -> Capture {
        let ifname = underlay_if(host);
        let file = dir.join(format!("{}-underlay.pcap", host.name()));
        let log = dir.join(format!("{}-tcpdump.log", host.name()));
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                host.netns(),
                "tcpdump",
                "--immediate-mode",
                "-n",
                "-U",
                "-s",
                "0",
            ])
            .args(["-i", &ifname, "-w"])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("tcpdump log"))
            .spawn()
            .expect("running tcpdump");
        let capture = Capture { child, file };
        wait_for("tcpdump to listen", Duration::from_secs(20), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.contains("listening on").then_some(()).ok_or(text)
        });
        capture
    }

    /// Stops tcpdump and returns the raw pcap bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.stop();
        std::fs::read(&self.file).expect("reading capture")
    }

    pub fn stop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = self.child.wait();
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The UDP payloads of the IPv4/UDP packets to `port` in a classic pcap
/// file (Ethernet link type, native byte order as tcpdump writes it on this
/// machine), in capture order.
pub fn udp_payloads_to(pcap: &[u8], port: u16) -> Vec<&[u8]> {
    const FILE_HEADER: usize = 24;
    const RECORD_HEADER: usize = 16;
    const UDP_HEADER: usize = 8;
    let field = |at: usize, len: usize| pcap.get(at..at + len);
    let mut out = Vec::new();
    let mut at = FILE_HEADER;
    while let Some(header) = field(at, RECORD_HEADER) {
        let caplen = u32::from_ne_bytes([header[8], header[9], header[10], header[11]]) as usize;
        let Some(frame) = field(at + RECORD_HEADER, caplen) else {
            break;
        };
        at += RECORD_HEADER + caplen;
        // Ethernet (14) then IPv4 with IHL, protocol 17, then the UDP dport.
        if frame.len() < 14 + 20 + UDP_HEADER
            || frame[12..14] != [0x08, 0x00]
            || frame[14 + 9] != 17
        {
            continue;
        }
        let udp = 14 + usize::from(frame[14] & 0x0f) * 4;
        if frame.get(udp + 2..udp + 4) == Some(&port.to_be_bytes()[..]) {
            out.push(frame.get(udp + UDP_HEADER..).unwrap_or(&[]));
        }
    }
    out
}

/// How many of the UDP packets to `port` carry `needle` in their payload.
pub fn udp_packets_to_with(pcap: &[u8], port: u16, needle: &[u8]) -> usize {
    udp_payloads_to(pcap, port)
        .into_iter()
        .filter(|p| contains(p, needle))
        .count()
}

/// Sends `marker` from `from` to `to` in UDP datagrams until a listener in
/// `to` has received it, so the marker certainly crossed the underlay.
pub fn send_marker(from: &Container, to: &Container, marker: &str) {
    const PORT: u16 = 7001;
    let (ready_tx, ready_rx) = mpsc::channel();
    let got = Arc::new(AtomicBool::new(false));
    let got_rx = Arc::clone(&got);
    let want = marker.as_bytes().to_vec();
    let listener = spawn_in(&to.netns, move || {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PORT)).expect("bind marker port");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        ready_tx.send(()).expect("ready");
        let deadline = Instant::now() + FIRST_PING;
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            if let Ok(n) = sock.recv(&mut buf)
                && buf[..n] == want[..]
            {
                got_rx.store(true, Ordering::Relaxed);
                return;
            }
        }
    });
    ready_rx.recv().expect("marker listener ready");
    let to_addr = SocketAddrV4::new(to.ip, PORT);
    let marker = marker.to_owned();
    let got_tx = Arc::clone(&got);
    join(spawn_in(&from.netns, move || {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
        let deadline = Instant::now() + FIRST_PING;
        while !got_tx.load(Ordering::Relaxed) && Instant::now() < deadline {
            let _ = sock.send_to(marker.as_bytes(), to_addr);
            std::thread::sleep(Duration::from_millis(100));
        }
    }));
    join(listener);
    assert!(
        got.load(Ordering::Relaxed),
        "the marker never reached {}",
        to.ip
    );
}

/// A marker string no other traffic contains.
pub fn unique_marker() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("MESHNET-CLEAR-TEXT-MARKER-{nanos:x}")
}
