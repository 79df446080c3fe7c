//! Fuzz target `docker_json`: the JSON the proxy takes from Docker clients
//! and the engine (a `containers/create` body, an image or container
//! inspect, an event line, an error body). None of it panics the proxy;
//! a create body the proxy accepts is rewritten into a body it still
//! accepts, whose entrypoint starts with the wait shim and that keeps the
//! client's environment; the DNS rewrite only ever adds.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use meshnet_proxy::intercept::{
    SHIM_PATH, dns_names, image_defaults, mesh_addrs, parse_create, rewrite_create, route, set_dns,
    waits_for_mesh,
};
use meshnet_proxy::upstream::docker_message;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let _ = docker_message(data);
    let _ = meshnet_proxy::parse_event(data, "unix:///run/meshnet/meshnet.sock");
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = route(text);
    }
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let _ = dns_names(&value);
    let _ = waits_for_mesh(&value);
    let image = image_defaults(&value);
    let Ok(create) = parse_create(&value) else {
        return;
    };
    let _ = mesh_addrs(&create.env, &create.network_mode, true);
    let _ = mesh_addrs(&create.env, &create.network_mode, false);
    let mut body = value.clone();
    match rewrite_create(
        &mut body,
        Some(&image),
        Path::new("/run/meshnet/meshnet-wait"),
        "owner",
    ) {
        Ok(()) => {
            let again = parse_create(&body).expect("a rewritten body parses");
            assert_eq!(
                again.entrypoint.first().map(String::as_str),
                Some(SHIM_PATH)
            );
            assert!(waits_for_mesh(
                &serde_json::json!({"Config": {"Entrypoint": again.entrypoint}})
            ));
            for var in &create.env {
                assert!(again.env.contains(var), "{var} lost in the rewrite");
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    let mut body = value;
    if set_dns(&mut body, Some("name"), Some("172.17.0.1"), "weave.local.").is_ok() {
        parse_create(&body).expect("a body with DNS settings still parses");
    }
});
