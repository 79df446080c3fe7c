//! Fuzz target `nft`: `nft -j list ruleset` output as the router reads it
//! (`meshnet_router::nft::Ruleset::parse`). Whatever the kernel's nft
//! prints (other tools' tables, iptables-nft's `xt` statements, a truncated
//! read), parsing never panics, and the decisions made from a parsed
//! ruleset (which chains drop forwarding, which subnets are exposed, the
//! batch that rewrites our table or removes it) never panic either and are
//! consistent: planning twice gives the same batch.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use meshnet_router::nft::{Desired, Ruleset, TABLE, plan, plan_removal};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(rules) = Ruleset::parse(text) else {
        return;
    };
    for c in rules.dropping_forward_chains() {
        assert!(
            !(c.family == "ip" && c.table == TABLE),
            "our own chain counted as another table's: {c:?}"
        );
    }
    let exposed = rules.exposed();
    let desired = Desired {
        bridge: "meshnet".into(),
        exposed: exposed.clone(),
    };
    let batch = plan(&rules, &desired).map(|b| serde_json::to_string(&b).expect("encodes"));
    let again = plan(&rules, &desired).map(|b| serde_json::to_string(&b).expect("encodes"));
    assert_eq!(batch, again, "plan is a function of its inputs");
    let _ = plan(
        &rules,
        &Desired {
            bridge: "meshnet".into(),
            exposed: BTreeMap::new(),
        },
    );
    if let Some(removal) = plan_removal(&rules) {
        serde_json::to_string(&removal).expect("a removal batch encodes");
    }
});
