//! Fast datapath admission: which underlay addresses may send us VXLAN.
//!
//! The kernel VXLAN device accepts any packet to UDP 6784 with the right
//! VNI, and VXLAN has no authentication. So the router keeps an nftables
//! table of its own, `ip meshnet_fastdp`, that drops every packet to the
//! VXLAN port whose source is not in the set `peers`:
//!
//! ```text
//! table ip meshnet_fastdp {
//!     set peers { type ipv4_addr; elements = { 192.0.2.2 } }
//!     chain input {
//!         type filter hook input priority -150; policy accept;
//!         udp dport 6784 ip saddr != @peers counter drop
//!     }
//! }
//! ```
//!
//! The set holds the underlay address of each peer this router has an
//! established connection with that is allowed on fastdp (no password, or
//! both ends trust each other's subnet); the data plane computes it and
//! [`run`] keeps the kernel in step. The table is separate from `ip meshnet`
//! (which `expose`/`hide` rewrite from the CLI process) so the two writers
//! never undo each other's changes.
//!
//! Deciding is pure: [`Current::parse`] reads `nft -j list ruleset`,
//! [`plan`] returns the batch that brings it to the desired set (element
//! adds and deletes when only the set differs, the whole table atomically
//! otherwise), `None` when the kernel already matches.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use nftables::batch::Batch;
use nftables::expr::{Expression, NamedExpression, Payload, PayloadField};
use nftables::schema::{Chain, Element, NfListObject, Nftables, Rule, Set, SetTypeValue, Table};
use nftables::stmt::{Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use serde_json::Value;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::datapath::Netns;
use crate::fastdp::VXLAN_PORT;
use crate::nft::{self, NftError};

/// The admission table (family `ip`).
pub const TABLE: &str = "meshnet_fastdp";
/// The set of admitted underlay addresses.
pub const SET: &str = "peers";
/// The chain that drops everything else.
pub const CHAIN: &str = "input";
/// Comment of the drop rule (how it is recognised when listed).
pub const RULE_COMMENT: &str = "meshnet fastdp admission";
/// Priority of the input chain: before the usual filter chains (0), so a
/// host firewall's accept cannot let unadmitted VXLAN in first (a drop in
/// any base chain is final anyway).
const PRIORITY: i32 = -150;
/// How often the kernel is checked again without a change (someone may
/// have flushed the ruleset).
pub const RESYNC: Duration = Duration::from_secs(10);
/// How soon a failed update is retried.
pub const RETRY: Duration = Duration::from_secs(1);

/// The admission state found in the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Current {
    /// Our table exists.
    pub table: bool,
    /// The set exists.
    pub set: bool,
    /// Our drop rule is in the input chain (exactly once).
    pub rule: bool,
    /// The set's elements.
    pub elements: BTreeSet<Ipv4Addr>,
}

impl Current {
    /// Reads the admission table out of `nft -j list ruleset` output; other
    /// tables and unknown objects are ignored.
    pub fn parse(json: &str) -> Result<Current, NftError> {
        let doc: Value =
            serde_json::from_str(json).map_err(|e| NftError::BadJson(e.to_string()))?;
        let objects = doc
            .get("nftables")
            .and_then(Value::as_array)
            .ok_or_else(|| NftError::BadJson("no \"nftables\" array".into()))?;
        let ours = |v: &Value| {
            v.get("family").and_then(Value::as_str) == Some("ip")
                && v.get("table").and_then(Value::as_str) == Some(TABLE)
        };
        let mut out = Current::default();
        let mut rules = 0;
        for obj in objects {
            if let Some(t) = obj.get("table") {
                if t.get("family").and_then(Value::as_str) == Some("ip")
                    && t.get("name").and_then(Value::as_str) == Some(TABLE)
                {
                    out.table = true;
                }
            } else if let Some(s) = obj.get("set").filter(|s| ours(s)) {
                if s.get("name").and_then(Value::as_str) == Some(SET) {
                    out.set = true;
                    out.elements = set_elements(s.get("elem"));
                }
            } else if let Some(r) = obj.get("rule").filter(|r| ours(r))
                && r.get("chain").and_then(Value::as_str) == Some(CHAIN)
                && r.get("comment").and_then(Value::as_str) == Some(RULE_COMMENT)
            {
                rules += 1;
            }
        }
        out.rule = rules == 1;
        Ok(out)
    }
}

/// Set elements as listed: plain strings, or `{"elem": {"val": ...}}`
/// objects when elements carry extra properties.
fn set_elements(elem: Option<&Value>) -> BTreeSet<Ipv4Addr> {
    let Some(items) = elem.and_then(Value::as_array) else {
        return BTreeSet::new();
    };
    items
        .iter()
        .filter_map(|v| {
            v.as_str()
                .or_else(|| v.pointer("/elem/val").and_then(Value::as_str))
                .and_then(|s| s.parse().ok())
        })
        .collect()
}

fn addrs(set: &BTreeSet<Ipv4Addr>) -> Cow<'static, [Expression<'static>]> {
    set.iter()
        .map(|a| Expression::String(Cow::Owned(a.to_string())))
        .collect::<Vec<_>>()
        .into()
}

fn element(set: &BTreeSet<Ipv4Addr>) -> NfListObject<'static> {
    NfListObject::Element(Element {
        family: NfFamily::IP,
        table: TABLE.into(),
        name: SET.into(),
        elem: addrs(set),
    })
}

fn table() -> NfListObject<'static> {
    NfListObject::Table(Table {
        family: NfFamily::IP,
        name: TABLE.into(),
        handle: None,
    })
}

fn field(protocol: &'static str, name: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: name.into(),
        },
    )))
}

/// `udp dport 6784 ip saddr != @peers counter drop`.
pub fn drop_rule() -> Rule<'static> {
    Rule {
        family: NfFamily::IP,
        table: TABLE.into(),
        chain: CHAIN.into(),
        expr: vec![
            Statement::Match(Match {
                left: field("udp", "dport"),
                right: Expression::Number(u32::from(VXLAN_PORT)),
                op: Operator::EQ,
            }),
            Statement::Match(Match {
                left: field("ip", "saddr"),
                right: Expression::String(Cow::Owned(format!("@{SET}"))),
                op: Operator::NEQ,
            }),
            Statement::Counter(nftables::stmt::Counter::Anonymous(None)),
            Statement::Drop(None),
        ]
        .into(),
        handle: None,
        index: None,
        comment: Some(RULE_COMMENT.into()),
    }
}

/// The whole table for `admitted`.
pub fn table_objects(admitted: &BTreeSet<Ipv4Addr>) -> Vec<NfListObject<'static>> {
    vec![
        table(),
        NfListObject::Set(Box::new(Set {
            family: NfFamily::IP,
            table: TABLE.into(),
            name: SET.into(),
            set_type: SetTypeValue::Single(nftables::schema::SetType::Ipv4Addr),
            elem: (!admitted.is_empty()).then(|| addrs(admitted)),
            ..Set::default()
        })),
        NfListObject::Chain(Chain {
            family: NfFamily::IP,
            table: TABLE.into(),
            name: CHAIN.into(),
            _type: Some(NfChainType::Filter),
            hook: Some(NfHook::Input),
            prio: Some(PRIORITY),
            policy: Some(NfChainPolicy::Accept),
            ..Chain::default()
        }),
        NfListObject::Rule(drop_rule()),
    ]
}

/// The batch that brings `current` to `admitted`; `None` when it matches.
///
/// When the table, set and rule are in place only the elements that differ
/// are added and deleted (one transaction); otherwise the table is replaced
/// whole (`add`, `delete`, then the new contents, also one transaction), so
/// there is never a moment without the drop rule once it was installed.
pub fn plan(current: &Current, admitted: &BTreeSet<Ipv4Addr>) -> Option<Nftables<'static>> {
    let mut batch = Batch::new();
    if current.table && current.set && current.rule {
        if &current.elements == admitted {
            return None;
        }
        let gone: BTreeSet<Ipv4Addr> = current.elements.difference(admitted).copied().collect();
        let new: BTreeSet<Ipv4Addr> = admitted.difference(&current.elements).copied().collect();
        if !gone.is_empty() {
            batch.delete(element(&gone));
        }
        if !new.is_empty() {
            batch.add(element(&new));
        }
        return Some(batch.to_nftables());
    }
    batch.add(table());
    batch.delete(table());
    for obj in table_objects(admitted) {
        batch.add(obj);
    }
    Some(batch.to_nftables())
}

/// The batch that removes the admission table, if it is there.
pub fn plan_removal(current: &Current) -> Option<Nftables<'static>> {
    current.table.then(|| {
        let mut batch = Batch::new();
        batch.delete(table());
        batch.to_nftables()
    })
}

/// Brings the kernel of `netns` to `admitted`; returns whether anything
/// changed.
pub async fn sync(netns: &Netns, admitted: &BTreeSet<Ipv4Addr>) -> Result<bool, NftError> {
    let current = Current::parse(&nft::list_json(netns).await?)?;
    match plan(&current, admitted) {
        Some(batch) => nft::apply(netns, &batch).await.map(|()| true),
        None => Ok(false),
    }
}

/// Keeps the kernel of `netns` in step with `admitted` until the sender is
/// dropped: applies each change, re-checks every [`RESYNC`], retries a
/// failure after [`RETRY`].
pub async fn run(netns: Netns, mut admitted: watch::Receiver<BTreeSet<Ipv4Addr>>) {
    loop {
        let want = admitted.borrow_and_update().clone();
        let wait = match sync(&netns, &want).await {
            Ok(changed) => {
                if changed {
                    debug!(admitted = ?want, "fastdp admission updated");
                }
                RESYNC
            }
            Err(e) => {
                warn!(error = %e, "cannot update the fastdp admission set; retrying");
                RETRY
            }
        };
        // A change or the timeout: sync again. The data plane gone: stop.
        if let Ok(Err(_closed)) = tokio::time::timeout(wait, admitted.changed()).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ips(list: &[&str]) -> BTreeSet<Ipv4Addr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn commands(batch: &Nftables) -> Vec<Value> {
        serde_json::to_value(batch).unwrap()["nftables"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// A listing as `nft -j list ruleset` prints our table with `elements`
    /// (and someone else's table next to it).
    fn listing(elements: &[&str], rule: bool) -> String {
        let mut objs = vec![
            json!({"metainfo": {"version": "1.0.6", "json_schema_version": 1}}),
            json!({"table": {"family": "ip", "name": "filter", "handle": 1}}),
            json!({"set": {"family": "ip", "table": "filter", "name": SET, "type": "ipv4_addr",
                "elem": ["203.0.113.9"]}}),
            json!({"table": {"family": "ip", "name": TABLE, "handle": 2}}),
        ];
        let mut set = json!({"family": "ip", "table": TABLE, "name": SET, "type": "ipv4_addr",
            "handle": 1});
        if !elements.is_empty() {
            set["elem"] = json!(elements);
        }
        objs.push(json!({ "set": set }));
        objs.push(
            json!({"chain": {"family": "ip", "table": TABLE, "name": CHAIN,
            "type": "filter", "hook": "input", "prio": PRIORITY, "policy": "accept"}}),
        );
        if rule {
            objs.push(
                json!({"rule": {"family": "ip", "table": TABLE, "chain": CHAIN,
                "handle": 3, "comment": RULE_COMMENT, "expr": []}}),
            );
        }
        json!({ "nftables": objs }).to_string()
    }

    #[test]
    fn drop_rule_is_vxlan_port_from_outside_the_set() {
        let r = serde_json::to_value(drop_rule()).unwrap();
        assert_eq!(
            r["expr"],
            json!([
                {"match": {"left": {"payload": {"protocol": "udp", "field": "dport"}},
                    "right": 6784, "op": "=="}},
                {"match": {"left": {"payload": {"protocol": "ip", "field": "saddr"}},
                    "right": "@peers", "op": "!="}},
                {"counter": null},
                {"drop": null}])
        );
        assert_eq!(r["table"], TABLE);
    }

    #[test]
    fn missing_table_is_created_whole_with_an_empty_set() {
        let cmds = commands(&plan(&Current::default(), &BTreeSet::new()).unwrap());
        assert_eq!(
            cmds[0],
            json!({"add": {"table": {"family": "ip", "name": TABLE}}})
        );
        assert_eq!(
            cmds[1],
            json!({"delete": {"table": {"family": "ip", "name": TABLE}}})
        );
        let set = &cmds[3]["add"]["set"];
        assert_eq!(set["name"], SET);
        assert_eq!(set["type"], "ipv4_addr");
        assert!(set.get("elem").is_none(), "{set}");
        let chain = &cmds[4]["add"]["chain"];
        assert_eq!(chain["hook"], "input");
        assert_eq!(chain["prio"], PRIORITY);
        assert_eq!(cmds[5]["add"]["rule"]["comment"], RULE_COMMENT);
        assert_eq!(cmds.len(), 6);
    }

    #[test]
    fn listing_is_read_back_and_matching_state_plans_nothing() {
        let cur = Current::parse(&listing(&["192.0.2.2", "192.0.2.3"], true)).unwrap();
        assert_eq!(
            cur,
            Current {
                table: true,
                set: true,
                rule: true,
                elements: ips(&["192.0.2.2", "192.0.2.3"]),
            }
        );
        assert!(plan(&cur, &ips(&["192.0.2.3", "192.0.2.2"])).is_none());
    }

    #[test]
    fn only_differing_elements_are_added_and_deleted() {
        let cur = Current::parse(&listing(&["192.0.2.2", "192.0.2.3"], true)).unwrap();
        let cmds = commands(&plan(&cur, &ips(&["192.0.2.3", "192.0.2.4"])).unwrap());
        assert_eq!(
            cmds,
            vec![
                json!({"delete": {"element": {"family": "ip", "table": TABLE, "name": SET,
                    "elem": ["192.0.2.2"]}}}),
                json!({"add": {"element": {"family": "ip", "table": TABLE, "name": SET,
                    "elem": ["192.0.2.4"]}}}),
            ]
        );
        // Last peer gone: the set is emptied, the drop rule stays.
        let cmds = commands(&plan(&cur, &BTreeSet::new()).unwrap());
        assert_eq!(cmds.len(), 1);
        assert!(cmds[0].get("delete").is_some());
    }

    #[test]
    fn a_missing_rule_rebuilds_the_table() {
        let cur = Current::parse(&listing(&["192.0.2.2"], false)).unwrap();
        assert!(!cur.rule);
        let cmds = commands(&plan(&cur, &ips(&["192.0.2.2"])).unwrap());
        assert_eq!(cmds[3]["add"]["set"]["elem"], json!(["192.0.2.2"]));
        assert_eq!(cmds[5]["add"]["rule"]["comment"], RULE_COMMENT);
    }

    #[test]
    fn parsing_elements_in_object_form_and_bad_input() {
        let doc = json!({"nftables": [
            {"table": {"family": "ip", "name": TABLE}},
            {"set": {"family": "ip", "table": TABLE, "name": SET,
                "elem": [{"elem": {"val": "192.0.2.7", "counter": {"packets": 1}}}, "junk", 5]}}]});
        let cur = Current::parse(&doc.to_string()).unwrap();
        assert_eq!(cur.elements, ips(&["192.0.2.7"]));
        assert!(!cur.rule);
        assert!(Current::parse("nope").is_err());
        assert!(Current::parse("{}").is_err());
        assert!(plan_removal(&Current::default()).is_none());
        assert_eq!(
            commands(&plan_removal(&cur).unwrap()),
            vec![json!({"delete": {"table": {"family": "ip", "name": TABLE}}})]
        );
    }
}
