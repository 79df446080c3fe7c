//! Fuzz target `cni`: the CNI configuration and result decoders (what a
//! runtime writes on the plugin's stdin, `prevResult` included) never
//! panic, and whatever they accept re-encodes to JSON that decodes to the
//! same value, in every spec version the plugin speaks.
#![no_main]

// The model is plain serde; compiled here on its own so the fuzz build
// does not pull in the whole CLI.
#[path = "../../cli/src/cni/types.rs"]
#[allow(dead_code)]
mod types;

use libfuzzer_sys::fuzz_target;
use types::{CniResult, NetConf, SUPPORTED_VERSIONS};

fuzz_target!(|data: &[u8]| {
    if let Ok(conf) = serde_json::from_slice::<NetConf>(data) {
        let text = serde_json::to_vec(&conf).expect("a decoded config encodes");
        let again: NetConf = serde_json::from_slice(&text).expect("re-encoded config decodes");
        assert_eq!(again, conf, "config round trip");
    }
    if let Ok(result) = serde_json::from_slice::<CniResult>(data) {
        for v in SUPPORTED_VERSIONS {
            let text = serde_json::to_vec(&result.clone().for_version(v)).expect("encodes");
            let again: CniResult =
                serde_json::from_slice(&text).expect("re-encoded result decodes");
            assert_eq!(again.cni_version, *v);
            assert_eq!(again.ips.len(), result.ips.len());
        }
    }
});
