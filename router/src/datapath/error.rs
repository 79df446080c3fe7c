//! The one error type of the datapath module.
//!
//! Every variant names what failed and, where a user can do something about
//! it, what to do next: the CLI prints these as one-line errors.

use std::io;

/// Errors from namespace, netlink and attach operations.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// A named or path-given namespace does not exist.
    #[error("no network namespace {what}: {hint}")]
    NoSuchNetns {
        /// How the user named it (`netns:foo`, `pid:42`, a path).
        what: String,
        /// What to do about it.
        hint: String,
    },
    /// The file exists but is not a network namespace handle.
    #[error(
        "{path} is not a network namespace (expected a file like /run/netns/NAME or /proc/PID/ns/net)"
    )]
    NotANetns {
        /// The offending path.
        path: String,
    },
    /// A namespace name that cannot be a file name under /run/netns.
    #[error("invalid network namespace name {name:?}: use letters, digits, '-', '_' or '.'")]
    BadNetnsName {
        /// The rejected name.
        name: String,
    },
    /// The kernel said EPERM/EACCES.
    #[error("permission denied while {op}: meshnet needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN)")]
    NotRoot {
        /// What we were doing.
        op: String,
    },
    /// An interface name longer than IFNAMSIZ-1 or otherwise invalid.
    #[error(
        "interface name {name:?} is invalid: names are 1-15 bytes without '/', ':' or whitespace"
    )]
    BadLinkName {
        /// The rejected name.
        name: String,
    },
    /// A link that must exist does not.
    #[error("no interface {name} in {netns}")]
    NoSuchLink {
        /// The interface name.
        name: String,
        /// Which namespace we looked in.
        netns: String,
    },
    /// A link exists with the right name but the wrong type.
    #[error(
        "interface {name} exists but is a {found}, not a {wanted}: remove it (`meshnet reset`) and retry"
    )]
    WrongLinkKind {
        /// The interface name.
        name: String,
        /// Kind found (`veth`, `bridge`, ...).
        found: String,
        /// Kind required.
        wanted: &'static str,
    },
    /// The bridge to attach to does not exist.
    #[error("bridge {bridge} does not exist in {netns}: start the router first (`meshnet launch`)")]
    NoBridge {
        /// The bridge name.
        bridge: String,
        /// Where we looked.
        netns: String,
    },
    /// An address no container should carry.
    #[error("cannot give a container the address {addr}: {why}")]
    BadAddress {
        /// The rejected CIDR.
        addr: String,
        /// Why it was rejected.
        why: &'static str,
    },
    /// An MTU below what IPv4 needs.
    #[error("MTU {mtu} is too small: IPv4 needs at least 68 (meshnet's default is 1376)")]
    BadMtu {
        /// The rejected value.
        mtu: u32,
    },
    /// The container shares the host's network namespace.
    #[error(
        "container is running in the host network namespace, and therefore cannot be attached - perhaps it was started with --net=host"
    )]
    HostNetns,
    /// The container already has an `ethwe` that is not ours.
    #[error(
        "container already has an interface {name} that is not attached to bridge {bridge}: remove it or run `meshnet reset`"
    )]
    ForeignInterface {
        /// The container-side name (`ethwe`).
        name: String,
        /// Our bridge.
        bridge: String,
    },
    /// Detach on a container that has no `ethwe` on our bridge.
    #[error("container is not attached to bridge {bridge}: nothing to detach")]
    NotAttached {
        /// Our bridge.
        bridge: String,
    },
    /// A netlink request failed with an errno.
    #[error("{op}: {source}")]
    Netlink {
        /// What we were doing, e.g. `creating bridge meshnet`.
        op: String,
        /// The kernel's answer.
        source: io::Error,
    },
    /// Any other system call failed.
    #[error("{op}: {source}")]
    Io {
        /// What we were doing.
        op: String,
        /// The OS error.
        source: io::Error,
    },
    /// The helper thread that enters a namespace died without answering.
    #[error("the worker thread for {op} panicked; this is a bug in meshnet")]
    WorkerLost {
        /// What the thread was doing.
        op: String,
    },
}

impl DatapathError {
    /// Wraps an OS error, turning EPERM/EACCES into [`DatapathError::NotRoot`]
    /// because that is the one cause a user can fix.
    pub(crate) fn io(op: impl Into<String>, source: io::Error) -> Self {
        let op = op.into();
        match source.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => Self::NotRoot { op },
            _ => Self::Io { op, source },
        }
    }

    /// Wraps a netlink errno (positive), with the same EPERM mapping as [`Self::io`].
    pub(crate) fn netlink(op: impl Into<String>, errno: i32) -> Self {
        let op = op.into();
        match errno {
            libc::EPERM | libc::EACCES => Self::NotRoot { op },
            _ => Self::Netlink {
                op,
                source: io::Error::from_raw_os_error(errno),
            },
        }
    }

    /// The errno behind a netlink or I/O failure, if any; lets callers treat
    /// EEXIST/ENOENT as outcomes rather than failures.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Netlink { source, .. } | Self::Io { source, .. } => source.raw_os_error(),
            Self::NotRoot { .. } => Some(libc::EPERM),
            _ => None,
        }
    }
}

/// Result alias for this module.
pub type Result<T, E = DatapathError> = std::result::Result<T, E>;
