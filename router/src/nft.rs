//! nftables state meshnet owns, through nftables' JSON API (`nft -j -f -`).
//!
//! Two kinds of rules (weave's, translated from iptables):
//!
//! - Our table `ip meshnet`, rewritten whole on every change in one atomic
//!   transaction: a `postrouting` nat chain with the expose masquerade rules
//!   and a `forward` filter chain (weave's `-i docker0 -o weave -j DROP`
//!   plus one marker rule per exposed subnet, which is how the set of
//!   exposed subnets and their masquerade flag is read back).
//! - Accept rules *inserted into other tables' forward base chains whose
//!   policy is drop* (Docker's iptables-nft `ip filter FORWARD` in
//!   practice). An accept in our own table cannot help there: every base
//!   chain on a hook runs and a drop anywhere is final. Without these,
//!   frames bridged on `meshnet` vanish as soon as br_netfilter hands them
//!   to the IPv4 FORWARD hook. Each such rule carries a comment
//!   starting with `meshnet`, so it can be found, deduplicated and removed
//!   (iptables-nft shows them as `-m comment --comment meshnet`).
//!
//! Everything that decides is a pure function of a parsed ruleset
//! ([`Ruleset`]) and the desired state ([`Desired`]): [`plan`] returns the
//! batch to apply, empty when the kernel already matches. The I/O is two
//! calls to the `nft` binary ([`list`], [`apply`]) made from a thread inside
//! the target namespace, because a child process inherits the network
//! namespace of the thread that spawns it.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use ipnet::Ipv4Net;
use nftables::batch::Batch;
use nftables::expr::{Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix};
use nftables::schema::{Chain, NfCmd, NfListObject, Nftables, Rule, Table};
use nftables::stmt::{Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use serde_json::Value;

use crate::datapath::Netns;

/// Our table (family `ip`).
pub const TABLE: &str = "meshnet";
/// Our nat chain (hook postrouting, priority srcnat).
pub const POSTROUTING: &str = "postrouting";
/// Our filter chain (hook forward, priority filter).
pub const FORWARD: &str = "forward";
/// Comment on the bridge-forwarding rules we insert into others' chains.
pub const BRIDGE_COMMENT: &str = "meshnet";
/// Docker's default bridge: weave drops docker0 → weave traffic so
/// containers on Docker's own network cannot reach the overlay unasked.
pub const DOCKER_BRIDGE: &str = "docker0";
/// Priority of nat postrouting chains (`srcnat`).
const PRIO_SRCNAT: i32 = 100;
/// Priority of filter chains (`filter`).
const PRIO_FILTER: i32 = 0;

/// Where the `nft` binary is looked for when it is not on `PATH` (root's
/// PATH usually has sbin, a service manager's may not).
const NFT_FALLBACKS: [&str; 3] = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"];

/// Errors talking to nftables.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The `nft` binary is missing.
    #[error(
        "cannot run nft ({0}): install the nftables package (Debian: apt-get install nftables)"
    )]
    NotInstalled(std::io::Error),
    /// `nft` ran and refused.
    #[error("nft failed while {op}: {stderr}")]
    Failed {
        /// What we asked for.
        op: String,
        /// What nft said (also mentions permissions when not root).
        stderr: String,
    },
    /// `nft -j` printed something we cannot read.
    #[error("cannot read nft's JSON output: {0}")]
    BadJson(String),
    /// Entering the namespace failed.
    #[error(transparent)]
    Netns(#[from] crate::datapath::DatapathError),
}

/// Comment on the rules that belong to exposed subnet `cidr`.
pub fn expose_comment(cidr: Ipv4Net) -> String {
    format!("meshnet expose {}", cidr.trunc())
}

/// What meshnet wants in the firewall of one namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// The bridge whose traffic must be forwarded.
    pub bridge: String,
    /// Exposed subnets (network addresses) → masquerade them.
    pub exposed: BTreeMap<Ipv4Net, bool>,
}

/// A chain as listed by `nft -j`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChainRef {
    /// `ip`, `inet`, ...
    pub family: String,
    /// Table name.
    pub table: String,
    /// Chain name.
    pub name: String,
}

/// A chain with its base-chain properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainInfo {
    /// Which chain.
    pub chain: ChainRef,
    /// Hook (`forward`, ...) for base chains.
    pub hook: Option<String>,
    /// Policy (`accept`/`drop`) for base chains.
    pub policy: Option<String>,
}

/// A rule as listed by `nft -j`: enough to find and delete ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    /// Its chain.
    pub chain: ChainRef,
    /// Kernel handle (for `delete rule`).
    pub handle: u32,
    /// Its comment.
    pub comment: Option<String>,
}

/// The parts of a ruleset meshnet reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Every chain.
    pub chains: Vec<ChainInfo>,
    /// Every rule.
    pub rules: Vec<RuleInfo>,
}

fn str_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn chain_ref(v: &Value, name_key: &str) -> Option<ChainRef> {
    Some(ChainRef {
        family: str_field(v, "family")?,
        table: str_field(v, "table")?,
        name: str_field(v, name_key)?,
    })
}

impl Ruleset {
    /// Parses `nft -j list ruleset` output. Only the fields meshnet needs
    /// are read, so statements this crate does not model (iptables-nft's
    /// `xt` matches, new nft features) never make parsing fail.
    pub fn parse(json: &str) -> Result<Self, NftError> {
        let doc: Value =
            serde_json::from_str(json).map_err(|e| NftError::BadJson(e.to_string()))?;
        let objects = doc
            .get("nftables")
            .and_then(Value::as_array)
            .ok_or_else(|| NftError::BadJson("no \"nftables\" array".into()))?;
        let mut out = Ruleset::default();
        for obj in objects {
            if let Some(c) = obj.get("chain") {
                if let Some(chain) = chain_ref(c, "name") {
                    out.chains.push(ChainInfo {
                        chain,
                        hook: str_field(c, "hook"),
                        policy: str_field(c, "policy"),
                    });
                }
            } else if let Some(r) = obj.get("rule")
                && let Some(chain) = chain_ref(r, "chain")
                && let Some(handle) = r
                    .get("handle")
                    .and_then(Value::as_u64)
                    .and_then(|h| u32::try_from(h).ok())
            {
                out.rules.push(RuleInfo {
                    chain,
                    handle,
                    comment: str_field(r, "comment"),
                });
            }
        }
        Ok(out)
    }

    /// Whether our table exists.
    pub fn has_table(&self) -> bool {
        self.chains
            .iter()
            .any(|c| c.chain.family == "ip" && c.chain.table == TABLE)
    }

    /// Forward base chains of other tables (families `ip` and `inet`) whose
    /// policy drops: the ones our bridge traffic must be accepted in.
    pub fn dropping_forward_chains(&self) -> Vec<ChainRef> {
        self.chains
            .iter()
            .filter(|c| {
                c.hook.as_deref() == Some("forward")
                    && c.policy.as_deref() == Some("drop")
                    && matches!(c.chain.family.as_str(), "ip" | "inet")
                    && !is_ours(&c.chain)
            })
            .map(|c| c.chain.clone())
            .collect()
    }

    /// Exposed subnets recorded in our table: the marker rule in `forward`
    /// says exposed, rules in `postrouting` say masqueraded.
    pub fn exposed(&self) -> BTreeMap<Ipv4Net, bool> {
        let mut out = BTreeMap::new();
        let ours = |r: &&RuleInfo, chain: &str| is_ours(&r.chain) && r.chain.name == chain;
        for r in self.rules.iter().filter(|r| ours(r, FORWARD)) {
            if let Some(cidr) = r.comment.as_deref().and_then(parse_expose_comment) {
                out.insert(cidr, false);
            }
        }
        for r in self.rules.iter().filter(|r| ours(r, POSTROUTING)) {
            if let Some(cidr) = r.comment.as_deref().and_then(parse_expose_comment)
                && let Some(masq) = out.get_mut(&cidr)
            {
                *masq = true;
            }
        }
        out
    }
}

fn is_ours(c: &ChainRef) -> bool {
    c.family == "ip" && c.table == TABLE
}

fn parse_expose_comment(c: &str) -> Option<Ipv4Net> {
    c.strip_prefix("meshnet expose ")?.parse().ok()
}

fn family(name: &str) -> NfFamily {
    match name {
        "inet" => NfFamily::INet,
        _ => NfFamily::IP,
    }
}

fn s(v: impl Into<String>) -> Expression<'static> {
    Expression::String(Cow::Owned(v.into()))
}

fn meta(key: MetaKey, op: Operator, value: &str) -> Statement<'static> {
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::Meta(Meta { key })),
        right: s(value),
        op,
    })
}

fn ip(field: &'static str, op: Operator, net: Ipv4Net) -> Statement<'static> {
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::Payload(Payload::PayloadField(
            PayloadField {
                protocol: "ip".into(),
                field: field.into(),
            },
        ))),
        right: Expression::Named(NamedExpression::Prefix(Prefix {
            addr: Box::new(s(net.network().to_string())),
            len: u32::from(net.prefix_len()),
        })),
        op,
    })
}

fn counter() -> Statement<'static> {
    Statement::Counter(nftables::stmt::Counter::Anonymous(None))
}

fn rule(chain: &ChainRef, expr: Vec<Statement<'static>>, comment: String) -> Rule<'static> {
    Rule {
        family: family(&chain.family),
        table: chain.table.clone().into(),
        chain: chain.name.clone().into(),
        expr: expr.into(),
        handle: None,
        index: None,
        comment: Some(comment.into()),
    }
}

fn our_chain(name: &str) -> ChainRef {
    ChainRef {
        family: "ip".into(),
        table: TABLE.into(),
        name: name.into(),
    }
}

/// weave's expose NAT rules for `cidr`, in order: leave multicast
/// alone, masquerade what enters the subnet from outside it (so replies come
/// back through the host), masquerade what leaves it.
pub fn masquerade_rules(cidr: Ipv4Net) -> Vec<Rule<'static>> {
    let cidr = cidr.trunc();
    let chain = our_chain(POSTROUTING);
    let multicast = Ipv4Net::new(std::net::Ipv4Addr::new(224, 0, 0, 0), 4).unwrap_or_default();
    let c = expose_comment(cidr);
    vec![
        rule(
            &chain,
            vec![
                ip("saddr", Operator::EQ, cidr),
                ip("daddr", Operator::EQ, multicast),
                Statement::Return(None),
            ],
            c.clone(),
        ),
        rule(
            &chain,
            vec![
                ip("daddr", Operator::EQ, cidr),
                ip("saddr", Operator::NEQ, cidr),
                counter(),
                Statement::Masquerade(None),
            ],
            c.clone(),
        ),
        rule(
            &chain,
            vec![
                ip("saddr", Operator::EQ, cidr),
                ip("daddr", Operator::NEQ, cidr),
                counter(),
                Statement::Masquerade(None),
            ],
            c,
        ),
    ]
}

/// The rules every dropping forward chain needs for `bridge` (as weave's,
/// non-NPC): bridged traffic, and traffic leaving the overlay.
///
/// weave's third accept, `-o weave -m conntrack --ctstate
/// RELATED,ESTABLISHED`, is left out on purpose: written as a native nft
/// `ct state` match it makes iptables-nft 1.8 refuse to list the whole chain
/// ("chain `FORWARD' is incompatible"), which would break `iptables -S` and
/// tools built on it, Docker included. Replies into the overlay are
/// accepted by the per-subnet [`expose_accept_rule`] instead: after
/// un-masquerading they are addressed to an exposed subnet.
pub fn bridge_accept_rules(chain: &ChainRef, bridge: &str) -> Vec<Rule<'static>> {
    let c = || BRIDGE_COMMENT.to_owned();
    vec![
        rule(
            chain,
            vec![
                meta(MetaKey::Iifname, Operator::EQ, bridge),
                meta(MetaKey::Oifname, Operator::EQ, bridge),
                counter(),
                Statement::Accept(None),
            ],
            c(),
        ),
        rule(
            chain,
            vec![
                meta(MetaKey::Iifname, Operator::EQ, bridge),
                meta(MetaKey::Oifname, Operator::NEQ, bridge),
                counter(),
                Statement::Accept(None),
            ],
            c(),
        ),
    ]
}

/// weave's `WEAVE-EXPOSE -d CIDR -j ACCEPT`: new connections from the host's
/// networks into an exposed subnet.
pub fn expose_accept_rule(chain: &ChainRef, bridge: &str, cidr: Ipv4Net) -> Rule<'static> {
    rule(
        chain,
        vec![
            meta(MetaKey::Oifname, Operator::EQ, bridge),
            ip("daddr", Operator::EQ, cidr.trunc()),
            counter(),
            Statement::Accept(None),
        ],
        expose_comment(cidr),
    )
}

/// Our whole table for `desired`.
pub fn table_objects(desired: &Desired) -> Vec<NfListObject<'static>> {
    let mut out = vec![NfListObject::Table(Table {
        family: NfFamily::IP,
        name: TABLE.into(),
        handle: None,
    })];
    for (name, ty, hook, prio) in [
        (
            POSTROUTING,
            NfChainType::NAT,
            NfHook::Postrouting,
            PRIO_SRCNAT,
        ),
        (FORWARD, NfChainType::Filter, NfHook::Forward, PRIO_FILTER),
    ] {
        out.push(NfListObject::Chain(Chain {
            family: NfFamily::IP,
            table: TABLE.into(),
            name: name.into(),
            _type: Some(ty),
            hook: Some(hook),
            prio: Some(prio),
            policy: Some(NfChainPolicy::Accept),
            ..Chain::default()
        }));
    }
    let fwd = our_chain(FORWARD);
    out.push(NfListObject::Rule(rule(
        &fwd,
        vec![
            meta(MetaKey::Iifname, Operator::EQ, DOCKER_BRIDGE),
            meta(MetaKey::Oifname, Operator::EQ, &desired.bridge),
            counter(),
            Statement::Drop(None),
        ],
        BRIDGE_COMMENT.into(),
    )));
    for (&cidr, &masq) in &desired.exposed {
        out.push(NfListObject::Rule(expose_accept_rule(
            &fwd,
            &desired.bridge,
            cidr,
        )));
        if masq {
            out.extend(masquerade_rules(cidr).into_iter().map(NfListObject::Rule));
        }
    }
    out
}

fn delete_rule(r: &RuleInfo) -> NfListObject<'static> {
    NfListObject::Rule(Rule {
        family: family(&r.chain.family),
        table: r.chain.table.clone().into(),
        chain: r.chain.name.clone().into(),
        handle: Some(r.handle),
        ..Rule::default()
    })
}

/// The batch that brings `current` to `desired`; `None` when nothing is to
/// be done.
///
/// Our table is replaced whole when its exposed set differs (or it is
/// missing): `add table` + `delete table` + the new contents in one
/// transaction is atomic and leaves exactly one copy. In others' dropping
/// forward chains, missing rules are inserted at the top and ours that are
/// no longer wanted (or duplicated) are deleted by handle.
pub fn plan(current: &Ruleset, desired: &Desired) -> Option<Nftables<'static>> {
    let mut batch = Batch::new();
    let mut changed = false;
    let our_rules = current.rules.iter().filter(|r| is_ours(&r.chain)).count();
    let want_rules = table_objects(desired)
        .iter()
        .filter(|o| matches!(o, NfListObject::Rule(_)))
        .count();
    if !current.has_table() || current.exposed() != desired.exposed || our_rules != want_rules {
        changed = true;
        batch.add(NfListObject::Table(Table {
            family: NfFamily::IP,
            name: TABLE.into(),
            handle: None,
        }));
        batch.delete(NfListObject::Table(Table {
            family: NfFamily::IP,
            name: TABLE.into(),
            handle: None,
        }));
        for obj in table_objects(desired) {
            batch.add(obj);
        }
    }
    for chain in current.dropping_forward_chains() {
        let mut wanted: Vec<(String, Rule<'static>)> = bridge_accept_rules(&chain, &desired.bridge)
            .into_iter()
            .map(|r| (BRIDGE_COMMENT.to_owned(), r))
            .collect();
        for &cidr in desired.exposed.keys() {
            wanted.push((
                expose_comment(cidr),
                expose_accept_rule(&chain, &desired.bridge, cidr),
            ));
        }
        let mut want_count: BTreeMap<&str, usize> = BTreeMap::new();
        for (c, _) in &wanted {
            *want_count.entry(c.as_str()).or_default() += 1;
        }
        let mut have: BTreeMap<String, Vec<&RuleInfo>> = BTreeMap::new();
        for r in current.rules.iter().filter(|r| r.chain == chain) {
            if let Some(c) = r.comment.as_deref().filter(|c| is_our_comment(c)) {
                have.entry(c.to_owned()).or_default().push(r);
            }
        }
        let comments: BTreeSet<&str> = want_count
            .keys()
            .copied()
            .chain(have.keys().map(String::as_str))
            .collect();
        for c in comments {
            let want = want_count.get(c).copied().unwrap_or(0);
            let got = have.get(c).map(Vec::as_slice).unwrap_or_default();
            if got.len() == want {
                continue;
            }
            // A partial or duplicated group is replaced as a whole: rules
            // within a group are only told apart by their comment.
            changed = true;
            for r in got {
                batch.delete(delete_rule(r));
            }
            // `insert` puts a rule first, so insert in reverse to keep order.
            for (_, r) in wanted.iter().rev().filter(|(wc, _)| wc == c) {
                batch.add_cmd(NfCmd::Insert(NfListObject::Rule(r.clone())));
            }
        }
    }
    changed.then(|| batch.to_nftables())
}

/// The batch that removes everything meshnet installed; `None` when
/// nothing is there.
pub fn plan_removal(current: &Ruleset) -> Option<Nftables<'static>> {
    let mut batch = Batch::new();
    let mut changed = false;
    if current.has_table() {
        changed = true;
        batch.delete(NfListObject::Table(Table {
            family: NfFamily::IP,
            name: TABLE.into(),
            handle: None,
        }));
    }
    for r in &current.rules {
        if !is_ours(&r.chain) && r.comment.as_deref().is_some_and(is_our_comment) {
            changed = true;
            batch.delete(delete_rule(r));
        }
    }
    changed.then(|| batch.to_nftables())
}

fn is_our_comment(c: &str) -> bool {
    c == BRIDGE_COMMENT || parse_expose_comment(c).is_some()
}

/// Starts `nft ARGS` with piped stdio: from `PATH` first, then from the
/// usual sbin paths (a service manager's `PATH` may lack sbin).
fn spawn_nft(args: &[&str], stdin: bool) -> Result<Child, NftError> {
    let spawn = |program: &Path| {
        Command::new(program)
            .args(args)
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
    };
    match spawn(Path::new("nft")) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => NFT_FALLBACKS
            .iter()
            .map(Path::new)
            .find(|p| p.is_file())
            .map_or(Err(e), spawn)
            .map_err(NftError::NotInstalled),
        r => r.map_err(NftError::NotInstalled),
    }
}

/// Runs `nft ARGS` with `stdin`, returning stdout. Blocking: call it on a
/// thread inside the target namespace.
fn run_nft(args: &[&str], stdin: Option<&str>, op: &str) -> Result<String, NftError> {
    let mut child = spawn_nft(args, stdin.is_some())?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|e| NftError::Failed {
                op: op.into(),
                stderr: format!("writing to nft: {e}"),
            })?;
    }
    let out = child.wait_with_output().map_err(|e| NftError::Failed {
        op: op.into(),
        stderr: format!("waiting for nft: {e}"),
    })?;
    if !out.status.success() {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if stderr.contains("Operation not permitted") {
            stderr.push_str(" (meshnet needs root: CAP_NET_ADMIN)");
        }
        return Err(NftError::Failed {
            op: op.into(),
            stderr,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The ruleset of `netns` as `nft -j list ruleset` prints it.
pub async fn list_json(netns: &Netns) -> Result<String, NftError> {
    netns
        .run("listing nftables", || {
            run_nft(&["-j", "list", "ruleset"], None, "listing the ruleset")
        })
        .await?
}

/// Lists the ruleset of `netns`.
pub async fn list(netns: &Netns) -> Result<Ruleset, NftError> {
    Ruleset::parse(&list_json(netns).await?)
}

/// Applies `batch` in `netns` as one transaction (all or nothing).
pub async fn apply(netns: &Netns, batch: &Nftables<'_>) -> Result<(), NftError> {
    let json = serde_json::to_string(batch).map_err(|e| NftError::BadJson(e.to_string()))?;
    netns
        .run("applying nftables rules", move || {
            run_nft(&["-j", "-f", "-"], Some(&json), "applying meshnet's rules").map(drop)
        })
        .await?
}

/// Brings the firewall of `netns` to `desired`; returns whether anything
/// changed.
pub async fn sync(netns: &Netns, desired: &Desired) -> Result<bool, NftError> {
    let current = list(netns).await?;
    match plan(&current, desired) {
        Some(batch) => apply(netns, &batch).await.map(|()| true),
        None => Ok(false),
    }
}

/// Removes our tables (this one and the fastdp admission table) and every
/// rule we inserted elsewhere; returns whether anything was there.
pub async fn remove_all(netns: &Netns) -> Result<bool, NftError> {
    let json = list_json(netns).await?;
    let mut removed = false;
    if let Some(batch) = crate::admission::plan_removal(&crate::admission::Current::parse(&json)?) {
        apply(netns, &batch).await?;
        removed = true;
    }
    if let Some(batch) = plan_removal(&Ruleset::parse(&json)?) {
        apply(netns, &batch).await?;
        removed = true;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn docker_forward() -> ChainRef {
        ChainRef {
            family: "ip".into(),
            table: "filter".into(),
            name: "FORWARD".into(),
        }
    }

    fn desired(exposed: &[(&str, bool)]) -> Desired {
        Desired {
            bridge: "meshnet".into(),
            exposed: exposed.iter().map(|(c, m)| (net(c), *m)).collect(),
        }
    }

    /// A listing as `nft -j list ruleset` prints it, from (chain, comment)
    /// pairs; handles are numbered from 10.
    fn listing(docker: bool, ours: bool, rules: &[(ChainRef, &str)]) -> String {
        let mut objs = vec![json!({"metainfo": {"version": "1.0.6", "json_schema_version": 1}})];
        if docker {
            objs.push(
                json!({"chain": {"family": "ip", "table": "filter", "name": "FORWARD",
                "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}}),
            );
            objs.push(json!({"chain": {"family": "ip", "table": "filter", "name": "DOCKER-USER", "handle": 2}}));
            objs.push(json!({"rule": {"family": "ip", "table": "filter", "chain": "FORWARD", "handle": 3,
                "expr": [{"xt": {"type": "match", "name": "physdev"}}, {"jump": {"target": "DOCKER-USER"}}]}}));
        }
        if ours {
            for (name, hook) in [(POSTROUTING, "postrouting"), (FORWARD, "forward")] {
                objs.push(
                    json!({"chain": {"family": "ip", "table": TABLE, "name": name,
                    "hook": hook, "policy": "accept"}}),
                );
            }
        }
        for (i, (chain, comment)) in rules.iter().enumerate() {
            objs.push(
                json!({"rule": {"family": chain.family, "table": chain.table,
                "chain": chain.name, "handle": 10 + i, "comment": comment, "expr": []}}),
            );
        }
        json!({ "nftables": objs }).to_string()
    }

    fn commands(batch: &Nftables) -> Vec<Value> {
        let v = serde_json::to_value(batch).unwrap();
        v["nftables"].as_array().unwrap().clone()
    }

    #[test]
    fn masquerade_rules_are_weaves_three_in_order() {
        let rules: Vec<Value> = masquerade_rules(net("10.32.0.1/12"))
            .iter()
            .map(|r| serde_json::to_value(r).unwrap())
            .collect();
        let prefix = json!({"prefix": {"addr": "10.32.0.0", "len": 12}});
        let saddr = json!({"payload": {"protocol": "ip", "field": "saddr"}});
        let daddr = json!({"payload": {"protocol": "ip", "field": "daddr"}});
        let expected = json!([
            {"family": "ip", "table": "meshnet", "chain": "postrouting", "comment": "meshnet expose 10.32.0.0/12",
             "expr": [
                {"match": {"left": saddr, "right": prefix, "op": "=="}},
                {"match": {"left": daddr, "right": {"prefix": {"addr": "224.0.0.0", "len": 4}}, "op": "=="}},
                {"return": null}]},
            {"family": "ip", "table": "meshnet", "chain": "postrouting", "comment": "meshnet expose 10.32.0.0/12",
             "expr": [
                {"match": {"left": daddr, "right": prefix, "op": "=="}},
                {"match": {"left": saddr, "right": prefix, "op": "!="}},
                {"counter": null},
                {"masquerade": null}]},
            {"family": "ip", "table": "meshnet", "chain": "postrouting", "comment": "meshnet expose 10.32.0.0/12",
             "expr": [
                {"match": {"left": saddr, "right": prefix, "op": "=="}},
                {"match": {"left": daddr, "right": prefix, "op": "!="}},
                {"counter": null},
                {"masquerade": null}]},
        ]);
        assert_eq!(Value::Array(rules), expected);
    }

    #[test]
    fn bridge_accepts_match_iptables_nft_equivalents() {
        let rules: Vec<Value> = bridge_accept_rules(&docker_forward(), "meshnet")
            .iter()
            .map(|r| serde_json::to_value(r).unwrap())
            .collect();
        let iif = json!({"meta": {"key": "iifname"}});
        let oif = json!({"meta": {"key": "oifname"}});
        assert_eq!(rules.len(), 2);
        for r in &rules {
            assert_eq!(r["table"], "filter");
            assert_eq!(r["chain"], "FORWARD");
            assert_eq!(r["comment"], "meshnet");
            assert_eq!(
                r["expr"].as_array().unwrap().last().unwrap(),
                &json!({"accept": null})
            );
        }
        assert_eq!(
            r0(&rules[0]),
            json!([
            {"match": {"left": iif, "right": "meshnet", "op": "=="}},
            {"match": {"left": oif, "right": "meshnet", "op": "=="}}])
        );
        assert_eq!(
            r0(&rules[1]),
            json!([
            {"match": {"left": iif, "right": "meshnet", "op": "=="}},
            {"match": {"left": oif, "right": "meshnet", "op": "!="}}])
        );
        // No native `ct state` anywhere: iptables-nft 1.8 cannot list it.
        assert!(!serde_json::to_string(&rules).unwrap().contains("\"ct\""));
    }

    /// The first two statements of a rule.
    fn r0(rule: &Value) -> Value {
        Value::Array(rule["expr"].as_array().unwrap()[..2].to_vec())
    }

    #[test]
    fn empty_ruleset_gets_our_table_atomically() {
        let batch = plan(&Ruleset::default(), &desired(&[("10.32.0.0/12", true)])).unwrap();
        let cmds = commands(&batch);
        // add table, delete table, then a fresh table: one transaction.
        assert_eq!(
            cmds[0],
            json!({"add": {"table": {"family": "ip", "name": "meshnet"}}})
        );
        assert_eq!(
            cmds[1],
            json!({"delete": {"table": {"family": "ip", "name": "meshnet"}}})
        );
        assert_eq!(
            cmds[2],
            json!({"add": {"table": {"family": "ip", "name": "meshnet"}}})
        );
        let chains: Vec<&Value> = cmds.iter().filter_map(|c| c["add"].get("chain")).collect();
        assert_eq!(chains.len(), 2);
        assert_eq!(chains[0]["type"], "nat");
        assert_eq!(chains[0]["hook"], "postrouting");
        assert_eq!(chains[0]["prio"], 100);
        assert_eq!(chains[1]["type"], "filter");
        assert_eq!(chains[1]["hook"], "forward");
        assert_eq!(chains[1]["policy"], "accept");
        let rules = cmds
            .iter()
            .filter(|c| c["add"].get("rule").is_some())
            .count();
        // docker0 drop + expose marker + three NAT rules.
        assert_eq!(rules, 5);
        // No foreign chain: nothing inserted anywhere else.
        assert!(cmds.iter().all(|c| c.get("insert").is_none()));
    }

    #[test]
    fn matching_state_plans_nothing() {
        let d = desired(&[("10.32.0.0/12", true), ("10.40.0.0/16", false)]);
        let fwd = our_chain(FORWARD);
        let post = our_chain(POSTROUTING);
        let e1 = "meshnet expose 10.32.0.0/12";
        let e2 = "meshnet expose 10.40.0.0/16";
        let rules = [
            (fwd.clone(), "meshnet"),
            (fwd.clone(), e1),
            (post.clone(), e1),
            (post.clone(), e1),
            (post, e1),
            (fwd, e2),
            (docker_forward(), "meshnet"),
            (docker_forward(), "meshnet"),
            (docker_forward(), e1),
            (docker_forward(), e2),
        ];
        let current = Ruleset::parse(&listing(true, true, &rules)).unwrap();
        assert_eq!(current.exposed(), d.exposed);
        assert_eq!(current.dropping_forward_chains(), vec![docker_forward()]);
        assert!(plan(&current, &d).is_none(), "{:?}", plan(&current, &d));
    }

    #[test]
    fn docker_chain_gets_missing_rules_inserted_in_order() {
        let current =
            Ruleset::parse(&listing(true, true, &[(our_chain(FORWARD), "meshnet")])).unwrap();
        let batch = plan(&current, &desired(&[])).unwrap();
        let cmds = commands(&batch);
        // Our table already matches: only inserts into Docker's chain.
        assert!(
            cmds.iter()
                .all(|c| c.get("add").is_none() && c.get("delete").is_none())
        );
        let inserted: Vec<&Value> = cmds
            .iter()
            .filter_map(|c| c["insert"].get("rule"))
            .collect();
        assert_eq!(inserted.len(), 2);
        // Inserted in reverse, so the first rule ends up on top.
        let last = inserted[1]["expr"].as_array().unwrap();
        assert_eq!(
            last[1]["match"]["op"], "==",
            "iifname meshnet oifname meshnet is first"
        );
        assert!(
            inserted
                .iter()
                .all(|r| r["chain"] == "FORWARD" && r["table"] == "filter")
        );
    }

    #[test]
    fn duplicates_and_stale_expose_rules_are_removed() {
        let rules = [
            (our_chain(FORWARD), "meshnet"),
            (docker_forward(), "meshnet"),
            (docker_forward(), "meshnet"),
            (docker_forward(), "meshnet"),
            (docker_forward(), "meshnet"),
            (docker_forward(), "meshnet expose 10.32.0.0/12"),
            (docker_forward(), "someone else's"),
        ];
        let current = Ruleset::parse(&listing(true, true, &rules)).unwrap();
        let cmds = commands(&plan(&current, &desired(&[])).unwrap());
        let deleted: BTreeSet<u64> = cmds
            .iter()
            .filter_map(|c| c["delete"]["rule"]["handle"].as_u64())
            .collect();
        // The four bridge rules (replaced by two) and the stale expose rule;
        // never the rule with someone else's comment.
        assert_eq!(deleted, BTreeSet::from([11, 12, 13, 14, 15]));
        assert_eq!(cmds.iter().filter(|c| c.get("insert").is_some()).count(), 2);
    }

    #[test]
    fn accepting_and_own_chains_are_left_alone() {
        let mut current = Ruleset::parse(&listing(false, false, &[])).unwrap();
        current.chains.push(ChainInfo {
            chain: ChainRef {
                family: "inet".into(),
                table: "fw".into(),
                name: "fwd".into(),
            },
            hook: Some("forward".into()),
            policy: Some("accept".into()),
        });
        current.chains.push(ChainInfo {
            chain: ChainRef {
                family: "bridge".into(),
                table: "b".into(),
                name: "fwd".into(),
            },
            hook: Some("forward".into()),
            policy: Some("drop".into()),
        });
        assert!(current.dropping_forward_chains().is_empty());
        let mut inet_drop = current.chains[0].clone();
        inet_drop.policy = Some("drop".into());
        current.chains.push(inet_drop);
        assert_eq!(current.dropping_forward_chains().len(), 1);
    }

    #[test]
    fn removal_deletes_table_and_our_foreign_rules_only() {
        let rules = [
            (our_chain(FORWARD), "meshnet"),
            (docker_forward(), "meshnet"),
            (docker_forward(), "meshnet expose 10.32.0.0/12"),
            (docker_forward(), "not ours"),
        ];
        let current = Ruleset::parse(&listing(true, true, &rules)).unwrap();
        let cmds = commands(&plan_removal(&current).unwrap());
        assert_eq!(
            cmds[0],
            json!({"delete": {"table": {"family": "ip", "name": "meshnet"}}})
        );
        let handles: Vec<u64> = cmds
            .iter()
            .filter_map(|c| c["delete"]["rule"]["handle"].as_u64())
            .collect();
        assert_eq!(handles, vec![11, 12]);
        let clean = Ruleset::parse(&listing(true, false, &[(docker_forward(), "x")])).unwrap();
        assert!(plan_removal(&clean).is_none());
    }

    #[test]
    fn parsing_is_lenient_but_not_blind() {
        assert!(matches!(
            Ruleset::parse("not json"),
            Err(NftError::BadJson(_))
        ));
        assert!(matches!(Ruleset::parse("{}"), Err(NftError::BadJson(_))));
        // Unknown objects and statements, rules without a handle: skipped.
        let r = Ruleset::parse(
            r#"{"nftables": [{"set": {"family": "ip", "name": "x"}},
                {"rule": {"family": "ip", "table": "t", "chain": "c", "expr": [{"xt": null}]}}]}"#,
        )
        .unwrap();
        assert_eq!(r, Ruleset::default());
        assert_eq!(
            parse_expose_comment("meshnet expose 10.32.0.0/12"),
            Some(net("10.32.0.0/12"))
        );
        assert_eq!(parse_expose_comment("meshnet expose junk"), None);
        assert_eq!(
            expose_comment(net("10.32.0.1/12")),
            "meshnet expose 10.32.0.0/12"
        );
    }
}
