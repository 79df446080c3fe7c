//! Who may connect. Once the Noise handshake has authenticated both ends, each side checks
//! the other's identity ([`check_identity`]: a derived name must match the key, the key must
//! be in `--authorized-keys` when that is set, and a name the mesh knows must come with the
//! key it is known under), then the mesh's own rules (`Mesh::handle_connection`). Every
//! failure is a [`ConnError`], sent to the other end as a typed [`Refusal`]; a refusal we
//! receive is believed only from a peer that passes our own checks
//! ([`Mesh::handle_refused`]), so an impostor cannot make us give up a target.

use std::time::Instant;

use crate::ids::{PeerName, PeerUid};
use crate::keys::{AuthorizedKeys, PublicKey};
use crate::mesh::{CloseReason, ConnInfo, Mesh};
use crate::wire::{Hello, Refusal, RefusalCode};

/// Why a connection was refused (by us; [`ConnError::refusal`] is what the peer receives).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnError {
    /// We dialled ourselves.
    #[error("cannot connect to ourself")]
    ConnectToSelf,
    /// Someone else uses our name (with our key: cloned state).
    #[error(
        "Peer name collision: {0} is used by another router (uid {1}); give each host its own --name or identity"
    )]
    NameCollision(PeerName, PeerUid),
    /// Too many connections.
    #[error("Connection limit reached ({0})")]
    ConnLimit(usize),
    /// A discovered target answered with a name we did not expect.
    #[error("Found unknown remote name: {name} at {addr}")]
    UnknownPeer {
        /// The name it gave.
        name: PeerName,
        /// Where.
        addr: std::net::SocketAddr,
    },
    /// Lost the duplicate-connection tie-break.
    #[error("Multiple connections to {peer} added to {ours}")]
    Duplicate {
        /// The remote peer.
        peer: PeerName,
        /// Us.
        ours: PeerName,
    },
    /// The peer says its name derives from its key, but the key derives another name.
    #[error(
        "peer claims name {claimed} but its key derives {derived}: refusing a peer that lies about its identity"
    )]
    NameNotDerived {
        /// The name it claimed.
        claimed: PeerName,
        /// The name its key derives.
        derived: PeerName,
    },
    /// `--authorized-keys` is set and does not list the peer's key.
    #[error(
        "peer {peer}({nickname}) has key {key}, which is not in --authorized-keys: add the line `meshnet identity` prints on that host to the file and run `meshnet reload`"
    )]
    UnknownKey {
        /// The name it claimed.
        peer: PeerName,
        /// Its nickname.
        nickname: String,
        /// Its key.
        key: PublicKey,
    },
    /// The mesh knows the claimed name under another key.
    #[error(
        "peer {peer}({nickname}) presented key {presented}, but the mesh knows {peer} under key {known}: if {peer} was reinstalled, stop its old router (the mesh forgets the old key once it is unreachable) and run `meshnet rmpeer {peer}` on a live peer; otherwise launch the new host with a different --name"
    )]
    KeyMismatch {
        /// The name it claimed.
        peer: PeerName,
        /// Its nickname.
        nickname: String,
        /// The key it proved it holds.
        presented: PublicKey,
        /// The key the mesh knows the name under.
        known: PublicKey,
    },
}

impl ConnError {
    /// The typed refusal the other end receives.
    pub fn refusal(&self) -> Refusal {
        let code = match self {
            ConnError::ConnectToSelf => RefusalCode::ConnectToSelf,
            ConnError::NameCollision(..) => RefusalCode::NameCollision,
            ConnError::ConnLimit(_) => RefusalCode::ConnLimit,
            ConnError::UnknownPeer { .. } => RefusalCode::UnknownPeer,
            ConnError::Duplicate { .. } => RefusalCode::Duplicate,
            ConnError::NameNotDerived { .. } => RefusalCode::NameNotDerived,
            ConnError::UnknownKey { .. } => RefusalCode::UnknownKey,
            ConnError::KeyMismatch { .. } => RefusalCode::NameKeyMismatch,
        };
        Refusal::new(code, self.to_string())
    }
}

/// The identity checks one side makes of the other after an authenticated handshake.
/// `known` is the key the mesh knows `hello.name` under, if any.
pub fn check_identity(
    hello: &Hello,
    key: &PublicKey,
    known: Option<PublicKey>,
    authorized: Option<&AuthorizedKeys>,
) -> Result<(), ConnError> {
    if hello.name_derived {
        let derived = key.derived_name();
        if derived != hello.name {
            return Err(ConnError::NameNotDerived {
                claimed: hello.name,
                derived,
            });
        }
    }
    if authorized.is_some_and(|a| !a.contains(key)) {
        return Err(ConnError::UnknownKey {
            peer: hello.name,
            nickname: hello.nickname.clone(),
            key: *key,
        });
    }
    if let Some(known) = known.filter(|k| k != key) {
        return Err(ConnError::KeyMismatch {
            peer: hello.name,
            nickname: hello.nickname.clone(),
            presented: *key,
            known,
        });
    }
    Ok(())
}

impl Mesh {
    /// [`check_identity`] against what this mesh knows.
    pub(crate) fn check_identity(&self, info: &ConnInfo, hello: &Hello) -> Result<(), ConnError> {
        check_identity(
            hello,
            &info.remote_key,
            self.topo.key_of(hello.name),
            self.authorized.as_ref(),
        )
    }

    /// Sets (or clears, with `None`) the `--authorized-keys` list. Connections whose key is
    /// no longer listed are closed; their peers are returned.
    pub fn set_authorized_keys(
        &mut self,
        keys: Option<AuthorizedKeys>,
        now: Instant,
    ) -> Vec<PeerName> {
        if now > self.now {
            self.now = now;
        }
        let dropped: Vec<_> = match &keys {
            None => Vec::new(),
            Some(k) => self
                .conns
                .iter()
                .filter(|(_, c)| !c.closing && !k.contains(&c.info.remote_key))
                .map(|(id, c)| (*id, c.peer, c.info.remote_key))
                .collect(),
        };
        self.authorized = keys;
        for (conn, _, key) in &dropped {
            self.close_conn(*conn, CloseReason::KeyNotAuthorized(*key));
        }
        self.refresh_targets();
        dropped.into_iter().map(|(_, peer, _)| peer).collect()
    }

    /// The keys allowed to connect, when `--authorized-keys` is set.
    pub fn authorized_keys(&self) -> Option<&AuthorizedKeys> {
        self.authorized.as_ref()
    }

    /// The peer we dialled refused us after an authenticated handshake. Its refusal is
    /// believed only if the peer passes our own identity checks: then the target is retried
    /// or given up as the refusal's code says, and `Ok` is returned. Otherwise the peer is an
    /// impostor (or unknown to our allow-list): its verdict is ignored, the target backs off
    /// as for any failure, and our own reason is returned (the router sends it back).
    pub fn handle_refused(
        &mut self,
        info: &ConnInfo,
        hello: &Hello,
        refusal: &Refusal,
        now: Instant,
    ) -> Result<(), ConnError> {
        if now > self.now {
            self.now = now;
        }
        let ours = self.check_identity(info, hello);
        if let Some(t) = info.target.as_ref().and_then(|k| self.targets.get_mut(k)) {
            let message = format!("refused by {}: {refusal}", hello.name);
            match &ours {
                Ok(()) if refusal.code.is_permanent() => t.fail_forever(message),
                Ok(()) => t.backoff(Some(message), now, &mut self.rng),
                Err(e) => t.backoff(Some(e.to_string()), now, &mut self.rng),
            }
        }
        self.refresh_targets();
        ours
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ShortId;

    fn hello(name: PeerName, derived: bool) -> Hello {
        Hello {
            name,
            name_derived: derived,
            nickname: "h".into(),
            uid: PeerUid(1),
            conn_half: 0,
            short_id: ShortId::default(),
            listen_port: 6783,
            trusted: false,
        }
    }

    #[test]
    fn derived_names_must_match_the_key() {
        let k = PublicKey([3; 32]);
        assert_eq!(
            check_identity(&hello(k.derived_name(), true), &k, None, None),
            Ok(())
        );
        let other = "02:00:00:00:00:01".parse::<PeerName>().unwrap();
        let e = check_identity(&hello(other, true), &k, None, None).unwrap_err();
        assert!(matches!(e, ConnError::NameNotDerived { .. }));
        assert_eq!(e.refusal().code, RefusalCode::NameNotDerived);
        // An explicit --name is not checked against the key.
        assert_eq!(check_identity(&hello(other, false), &k, None, None), Ok(()));
    }

    #[test]
    fn a_known_name_needs_its_known_key() {
        let (k, known) = (PublicKey([3; 32]), PublicKey([4; 32]));
        let name = "02:00:00:00:00:01".parse::<PeerName>().unwrap();
        assert_eq!(
            check_identity(&hello(name, false), &k, Some(k), None),
            Ok(())
        );
        let e = check_identity(&hello(name, false), &k, Some(known), None).unwrap_err();
        assert_eq!(e.refusal().code, RefusalCode::NameKeyMismatch);
        let text = e.to_string();
        assert!(text.contains(&k.fingerprint()) && text.contains(&known.fingerprint()));
        assert!(text.contains("meshnet rmpeer 02:00:00:00:00:01"), "{text}");
    }

    #[test]
    fn only_listed_keys_pass_an_allow_list() {
        let (k, other) = (PublicKey([3; 32]), PublicKey([4; 32]));
        let name = "02:00:00:00:00:01".parse::<PeerName>().unwrap();
        let list = AuthorizedKeys::parse(&k.authorized_line("x")).unwrap();
        assert_eq!(
            check_identity(&hello(name, false), &k, None, Some(&list)),
            Ok(())
        );
        let e = check_identity(&hello(name, false), &other, None, Some(&list)).unwrap_err();
        assert_eq!(e.refusal().code, RefusalCode::UnknownKey);
        assert!(e.to_string().contains("meshnet identity"));
        let empty = AuthorizedKeys::default();
        assert!(check_identity(&hello(name, false), &k, None, Some(&empty)).is_err());
    }
}
