//! Network namespaces as open file descriptors, and a way to run code inside one.
//!
//! A namespace is a per-*thread* attribute, so we never `setns()` a tokio
//! worker (it would drag every other task on that worker into the container).
//! Instead [`Netns::run`] spawns a short-lived std thread that enters the
//! namespace, runs a closure and reports back through a oneshot channel.
//! Sockets created there (netlink, AF_PACKET, ioctl sockets) stay bound to
//! that namespace after the thread exits, which is what
//! [`crate::datapath::netlink::Netlink::connect`] relies on.

use std::fmt;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

use super::error::{DatapathError, Result};

/// Where named namespaces live (`ip netns add NAME` creates them here).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// `NS_GET_NSTYPE` from `<linux/nsfs.h>`: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// An open handle on a network namespace.
///
/// Holding the fd keeps the namespace alive even if its name is deleted, so
/// a `Netns` can be used long after lookup without races on the name.
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
    /// How the user named it; used in error messages.
    label: String,
    /// (device, inode) of the nsfs file: the namespace's identity.
    id: (u64, u64),
}

impl Netns {
    /// The namespace this process runs in.
    pub fn current() -> Result<Self> {
        Self::open(
            Path::new("/proc/self/ns/net"),
            "the current network namespace".into(),
            || "is /proc mounted?".into(),
        )
    }

    /// A namespace given by path (a bind-mounted nsfs file or `/proc/PID/ns/net`).
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::open(path, path.display().to_string(), || "check the path".into())
    }

    /// A namespace created with `ip netns add NAME` (`/run/netns/NAME`).
    pub fn named(name: &str) -> Result<Self> {
        if !valid_netns_name(name) {
            return Err(DatapathError::BadNetnsName { name: name.into() });
        }
        let path = PathBuf::from(NETNS_RUN_DIR).join(name);
        Self::open(&path, format!("netns:{name}"), || {
            format!("create it with `ip netns add {name}` or check the name")
        })
    }

    /// The namespace of a running process (`/proc/PID/ns/net`).
    pub fn of_pid(pid: u32) -> Result<Self> {
        if pid == 0 {
            return Err(DatapathError::NoSuchNetns {
                what: "pid:0".into(),
                hint: "pid 0 is not a process".into(),
            });
        }
        let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        Self::open(&path, format!("pid:{pid}"), || {
            format!("no process {pid}; is the container running?")
        })
    }

    fn open(path: &Path, label: String, hint: impl FnOnce() -> String) -> Result<Self> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DatapathError::NoSuchNetns {
                    what: label,
                    hint: hint(),
                });
            }
            Err(e) => return Err(DatapathError::io(format!("opening {}", path.display()), e)),
        };
        // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd; a
        // non-nsfs fd makes it fail with ENOTTY, which we report.
        let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
        if kind != libc::CLONE_NEWNET {
            return Err(DatapathError::NotANetns {
                path: path.display().to_string(),
            });
        }
        let meta = file
            .metadata()
            .map_err(|e| DatapathError::io(format!("reading {}", path.display()), e))?;
        Ok(Self {
            fd: file.into(),
            label,
            id: (meta.dev(), meta.ino()),
        })
    }

    /// The namespace inode: unique among live namespaces, used to derive
    /// short interface names.
    pub fn inode(&self) -> u64 {
        self.id.1
    }

    /// True when both handles name the same namespace.
    pub fn same_as(&self, other: &Netns) -> bool {
        self.id == other.id
    }

    /// How this namespace was named, for messages (`netns:foo`, `pid:42`).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// A second handle on the same namespace.
    pub fn try_clone(&self) -> Result<Self> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| DatapathError::io("duplicating a netns fd", e))?;
        Ok(Self {
            fd,
            label: self.label.clone(),
            id: self.id,
        })
    }

    /// The raw fd, for netlink `IFLA_NET_NS_FD`.
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }

    /// Runs `f` on a fresh thread that has entered this namespace and awaits
    /// its result without blocking the async runtime.
    pub async fn run<F, R>(&self, op: &str, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| DatapathError::io("duplicating a netns fd", e))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let label = self.label.clone();
        std::thread::Builder::new()
            .name("meshnet-netns".into())
            .spawn(move || {
                let entered = setns(fd.as_fd(), CloneFlags::CLONE_NEWNET)
                    .map_err(|e| DatapathError::io(format!("entering {label}"), e.into()));
                // The receiver only goes away if the caller was cancelled.
                let _ = tx.send(entered.map(|()| f()));
            })
            .map_err(|e| DatapathError::io("spawning a netns worker thread", e))?;
        rx.await
            .map_err(|_| DatapathError::WorkerLost { op: op.into() })?
    }
}

impl fmt::Display for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

/// Names `ip netns` accepts and that cannot escape `/run/netns`.
fn valid_netns_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_names() {
        assert!(valid_netns_name("c1"));
        assert!(valid_netns_name("mnt-dp-12.3_x"));
        assert!(!valid_netns_name(""));
        assert!(!valid_netns_name(".."));
        assert!(!valid_netns_name("a/b"));
        assert!(!valid_netns_name("a b"));
    }

    #[test]
    fn bad_name_is_rejected_before_touching_the_filesystem() {
        let err = Netns::named("../etc").unwrap_err();
        assert!(matches!(err, DatapathError::BadNetnsName { .. }), "{err}");
    }

    #[test]
    fn missing_named_netns_says_what_to_do() {
        let err = Netns::named("meshnet-surely-missing-ns").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("netns:meshnet-surely-missing-ns"), "{msg}");
        assert!(
            msg.contains("ip netns add meshnet-surely-missing-ns"),
            "{msg}"
        );
    }

    #[test]
    fn a_regular_file_is_not_a_netns() {
        let err = Netns::from_path("/proc/self/status").unwrap_err();
        assert!(matches!(err, DatapathError::NotANetns { .. }), "{err}");
    }

    #[test]
    fn current_is_same_as_self_pid() {
        let a = Netns::current().unwrap();
        let b = Netns::of_pid(std::process::id()).unwrap();
        assert!(a.same_as(&b));
        assert!(a.inode() > 0);
    }
}
