//! Upstream forwarding for names outside the domain: the `nameserver`
//! lines of `--resolv-conf` (re-read when the file changes, our own listen
//! address filtered out), tried in order, each with a timeout.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::dns::answer::MAX_UDP_REPLY;

/// How often the file's modification time is checked, at most (weave: 5 s).
pub const RESOLV_CONF_CHECK: Duration = Duration::from_secs(2);
/// Most upstream servers used (glibc's MAXNS).
pub const MAX_UPSTREAMS: usize = 3;

/// The upstream servers and how to reach them.
#[derive(Debug)]
pub struct Upstream {
    path: PathBuf,
    /// Our own listen address: never forward to ourselves.
    own: IpAddr,
    timeout: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    checked: Option<Instant>,
    mtime: Option<SystemTime>,
    servers: Vec<SocketAddr>,
}

/// The `nameserver` addresses of a resolv.conf text, minus `own`.
pub fn parse_resolv_conf(text: &str, own: IpAddr) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter_map(|w| w.split('%').next()?.parse::<IpAddr>().ok())
        .filter(|ip| *ip != own && !ip.is_unspecified())
        .map(|ip| SocketAddr::new(ip, 53))
        .take(MAX_UPSTREAMS)
        .collect()
}

impl Upstream {
    pub fn new(path: PathBuf, own: IpAddr, timeout: Duration) -> Upstream {
        Upstream {
            path,
            own,
            timeout,
            state: Mutex::new(State::default()),
        }
    }

    /// The file the servers come from.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The current servers, re-reading the file if it changed.
    pub fn servers(&self) -> Vec<SocketAddr> {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st
            .checked
            .is_some_and(|t| now.duration_since(t) < RESOLV_CONF_CHECK)
        {
            return st.servers.clone();
        }
        st.checked = Some(now);
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if mtime != st.mtime || mtime.is_none() {
            st.mtime = mtime;
            st.servers = std::fs::read_to_string(&self.path)
                .map(|t| parse_resolv_conf(&t, self.own))
                .unwrap_or_default();
        }
        st.servers.clone()
    }

    /// Forwards a UDP query; the first server to answer wins, in order.
    /// Returns the reply and how many servers failed before it.
    pub async fn forward_udp(&self, query: &[u8]) -> (Option<Vec<u8>>, u64) {
        let mut failed = 0;
        for server in self.servers() {
            match tokio::time::timeout(self.timeout, udp_exchange(server, query)).await {
                Ok(Ok(reply)) => return (Some(reply), failed),
                _ => failed += 1,
            }
        }
        (None, failed)
    }

    /// Forwards a TCP query (length prefix not included).
    pub async fn forward_tcp(&self, query: &[u8]) -> (Option<Vec<u8>>, u64) {
        let mut failed = 0;
        for server in self.servers() {
            match tokio::time::timeout(self.timeout, tcp_exchange(server, query)).await {
                Ok(Ok(reply)) => return (Some(reply), failed),
                _ => failed += 1,
            }
        }
        (None, failed)
    }
}

async fn udp_exchange(server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = match server {
        SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("literal"),
        SocketAddr::V6(_) => "[::]:0".parse().expect("literal"),
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(server).await?;
    sock.send(query).await?;
    let mut buf = vec![0; MAX_UDP_REPLY];
    loop {
        let n = sock.recv(&mut buf).await?;
        // Only a reply with our id counts (the socket is connected, so it
        // comes from the server; a stray late reply is skipped).
        if n >= 2 && buf[..2] == query[..2.min(query.len())] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn tcp_exchange(server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(server).await?;
    let len = u16::try_from(query.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    s.write_all(&len.to_be_bytes()).await?;
    s.write_all(query).await?;
    let n = s.read_u16().await?;
    let mut buf = vec![0; usize::from(n)];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_servers_in_order_without_ourselves() {
        let own: IpAddr = "172.17.0.1".parse().expect("ip");
        let text = "# comment\nsearch example.com\nnameserver 172.17.0.1\nnameserver 10.0.0.2\n\
                    nameserver fe80::1%eth0\nnameserver bogus\nnameserver 10.0.0.3\nnameserver 10.0.0.4\n";
        let got: Vec<String> = parse_resolv_conf(text, own)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["10.0.0.2:53", "[fe80::1]:53", "10.0.0.3:53"]);
    }

    #[test]
    fn servers_follow_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("resolv.conf");
        let up = Upstream::new(
            path.clone(),
            "127.0.0.1".parse().expect("ip"),
            Duration::from_secs(1),
        );
        assert!(up.servers().is_empty(), "no file, no servers");
        std::fs::write(&path, "nameserver 10.1.1.1\n").expect("write");
        up.state.lock().expect("lock").checked = None;
        assert_eq!(up.servers(), ["10.1.1.1:53".parse().expect("addr")]);
    }
}
