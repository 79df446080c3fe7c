//! Quorum agreement on the initial ring: single-decree Paxos carried in
//! gossip, as weave's `ipam/paxos`. Every elector is proposer, acceptor and
//! learner; its whole state is a map `peer -> Claims` that only that peer
//! changes (monotonically in `(promise, accepted)`), so gossip merges it by
//! per-peer maximum and the protocol steps are local re-evaluations
//! ([`Paxos::think`]) after each merge.
//!
//! Safety is classic Paxos with quorum `N/2 + 1` of the configured
//! `consensus=N`: a proposer only picks a value after a quorum promised its
//! proposal, and then must pick the highest-numbered value any of them had
//! accepted; a value is chosen once a quorum accepted the same proposal.
//! Any two quorums of the same N intersect, so at most one value (peer list)
//! is ever chosen. The chosen value is the set of electors the proposer had
//! heard from, which every peer turns into the same ring.
//! Claims are persisted with the rest of the state: an acceptor that forgot
//! a promise across a restart could otherwise break the quorum argument.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::addr::PeerName;

/// A proposal number, ordered by `(round, proposer)`. The zero value means
/// "none".
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
pub struct ProposalId {
    /// Round, increasing.
    pub round: u32,
    /// Proposer, for uniqueness.
    pub proposer: PeerName,
}

impl ProposalId {
    fn is_none(&self) -> bool {
        self.round == 0
    }
}

/// One elector's published Paxos state.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Claims {
    /// Highest proposal promised.
    pub promise: ProposalId,
    /// Highest proposal accepted.
    pub accepted: ProposalId,
    /// Value of `accepted`.
    pub value: BTreeSet<PeerName>,
}

impl Claims {
    fn key(&self) -> (ProposalId, ProposalId) {
        (self.promise, self.accepted)
    }
}

/// Wire and disk form of the Paxos state.
pub type PaxosState = BTreeMap<PeerName, Claims>;

/// One peer's Paxos node. See the module docs.
#[derive(Clone, Debug)]
pub struct Paxos {
    me: PeerName,
    quorum: u32,
    elector: bool,
    knows: PaxosState,
}

impl Paxos {
    /// A node; `quorum_of` is the configured `N`. Non-electors (observers,
    /// seed peers) never promise, accept, count or decide.
    pub fn new(me: PeerName, quorum_of: u32, elector: bool) -> Self {
        let mut knows = BTreeMap::new();
        if elector {
            knows.insert(me, Claims::default());
        }
        Paxos {
            me,
            quorum: quorum_of / 2 + 1,
            elector,
            knows,
        }
    }

    /// The quorum size.
    pub fn quorum(&self) -> u32 {
        self.quorum
    }

    /// Electors heard from (including us).
    pub fn known(&self) -> usize {
        self.knows.len()
    }

    /// True for electors.
    pub fn is_elector(&self) -> bool {
        self.elector
    }

    /// The state to gossip and persist.
    pub fn state(&self) -> &PaxosState {
        &self.knows
    }

    /// Restores our own claims from disk (the others are re-learnt).
    pub fn restore(&mut self, state: &PaxosState) {
        self.merge(state);
    }

    /// Merges gossiped claims; returns whether anything changed.
    pub fn merge(&mut self, from: &PaxosState) -> bool {
        let mut changed = false;
        for (peer, theirs) in from {
            if *peer == self.me && !self.elector {
                continue;
            }
            match self.knows.get_mut(peer) {
                Some(ours) if ours.key() >= theirs.key() => {}
                Some(ours) => {
                    *ours = theirs.clone();
                    changed = true;
                }
                None => {
                    self.knows.insert(*peer, theirs.clone());
                    changed = true;
                }
            }
        }
        changed
    }

    /// Starts a new proposal above every round seen.
    pub fn propose(&mut self) {
        if !self.elector {
            return;
        }
        let max_round = self
            .knows
            .values()
            .map(|c| c.promise.round)
            .max()
            .unwrap_or(0);
        let me = self.me;
        if let Some(ours) = self.knows.get_mut(&me) {
            ours.promise = ProposalId {
                round: max_round.saturating_add(1),
                proposer: me,
            };
        }
        self.think();
    }

    /// Runs the promise / accept / propose steps to a fixpoint; returns
    /// whether our own claims changed (then they must be gossiped).
    pub fn think(&mut self) -> bool {
        if !self.elector {
            return false;
        }
        let mut changed = false;
        loop {
            let Some(ours) = self.knows.get(&self.me).cloned() else {
                return changed;
            };
            let mut next = ours.clone();
            // Promise: follow the highest proposal anyone has made.
            for c in self.knows.values() {
                if c.promise > next.promise {
                    next.promise = c.promise;
                }
            }
            let p = next.promise;
            // Accept: the proposer has fixed a value for the proposal we promised.
            if !p.is_none()
                && next.accepted != p
                && let Some(prop) = self.knows.get(&p.proposer)
                && prop.accepted == p
            {
                next.accepted = p;
                next.value = prop.value.clone();
            }
            // Propose: our own proposal has a quorum of promises.
            if p.proposer == self.me && !p.is_none() && next.accepted != p {
                let promised: Vec<&Claims> = self
                    .knows
                    .iter()
                    .filter(|(peer, c)| c.promise == p || (**peer == self.me))
                    .map(|(_, c)| c)
                    .collect();
                if promised.len() as u32 >= self.quorum {
                    let prior = promised
                        .iter()
                        .filter(|c| !c.accepted.is_none())
                        .max_by_key(|c| c.accepted);
                    next.value = match prior {
                        Some(c) => c.value.clone(),
                        None => self.knows.keys().copied().collect(),
                    };
                    next.accepted = p;
                }
            }
            if next == ours {
                return changed;
            }
            self.knows.insert(self.me, next);
            changed = true;
        }
    }

    /// The chosen value, once a quorum accepted one proposal.
    pub fn decided(&self) -> Option<(ProposalId, BTreeSet<PeerName>)> {
        // A non-voter does not know the configured N, so it cannot tell a
        // quorum: it waits for the ring itself.
        if !self.elector {
            return None;
        }
        let mut counts: BTreeMap<ProposalId, (u32, &BTreeSet<PeerName>)> = BTreeMap::new();
        for c in self.knows.values() {
            if c.accepted.is_none() || c.value.is_empty() {
                continue;
            }
            let e = counts.entry(c.accepted).or_insert((0, &c.value));
            e.0 += 1;
        }
        counts
            .into_iter()
            .find(|(_, (n, _))| *n >= self.quorum)
            .map(|(p, (_, v))| (p, v.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(nodes: &mut [Paxos], links: &dyn Fn(usize, usize) -> bool) {
        for _ in 0..10 {
            for i in 0..nodes.len() {
                for j in 0..nodes.len() {
                    if i != j && links(i, j) {
                        let s = nodes[i].state().clone();
                        nodes[j].merge(&s);
                        nodes[j].think();
                    }
                }
            }
        }
    }

    #[test]
    fn three_electors_agree() {
        let mut nodes: Vec<Paxos> = (1..=3)
            .map(|i| Paxos::new(PeerName::new(i).unwrap(), 3, true))
            .collect();
        run(&mut nodes, &|_, _| true);
        nodes[0].propose();
        nodes[2].propose();
        run(&mut nodes, &|_, _| true);
        let d0 = nodes[0].decided().unwrap();
        for n in &nodes {
            assert_eq!(n.decided().unwrap(), d0);
        }
        assert_eq!(d0.1.len(), 3);
    }

    #[test]
    fn minority_cannot_decide_and_lone_quorum_one_can() {
        let mut nodes: Vec<Paxos> = (1..=3)
            .map(|i| Paxos::new(PeerName::new(i).unwrap(), 3, true))
            .collect();
        nodes[0].propose();
        run(&mut nodes, &|_, _| false);
        assert!(nodes[0].decided().is_none());
        let mut lone = Paxos::new(PeerName::new(9).unwrap(), 1, true);
        lone.propose();
        assert_eq!(lone.decided().unwrap().1.len(), 1);
    }

    #[test]
    fn non_electors_never_decide_from_a_minority() {
        // Seed 7694 of the simulator: one elector accepted its own proposal
        // and crashed; an observer (which cannot know N) must not treat
        // that lone acceptance as a decision.
        let mut lone = Paxos::new(PeerName::new(3).unwrap(), 3, true);
        let mut other = Paxos::new(PeerName::new(1).unwrap(), 3, true);
        lone.propose();
        other.merge(lone.state());
        other.think();
        lone.merge(other.state());
        lone.think();
        assert!(lone.state()[&PeerName::new(3).unwrap()].accepted.round > 0);
        assert!(lone.decided().is_none());
        let mut observer = Paxos::new(PeerName::new(4).unwrap(), 1, false);
        observer.merge(lone.state());
        assert!(observer.decided().is_none());
    }

    #[test]
    fn later_proposal_keeps_chosen_value() {
        let mut nodes: Vec<Paxos> = (1..=3)
            .map(|i| Paxos::new(PeerName::new(i).unwrap(), 3, true))
            .collect();
        // 0 and 1 decide while 2 is cut off.
        nodes[0].propose();
        run(&mut nodes, &|i, j| i < 2 && j < 2);
        let d = nodes[0].decided().unwrap();
        // 2 proposes with 1 (who accepted) in its quorum: must re-propose d's value.
        nodes[2].propose();
        run(&mut nodes, &|i, j| i > 0 && j > 0);
        assert_eq!(nodes[2].decided().unwrap().1, d.1);
    }
}
