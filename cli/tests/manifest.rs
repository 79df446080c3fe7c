//! deploy/kubernetes/meshnet.yaml is valid YAML whose every document is a
//! Kubernetes object of the k8s-openapi schema: each decodes into its typed
//! form and encodes back to the same JSON (a misspelt or misplaced field
//! would be dropped and show up as a difference), and the DaemonSet runs
//! what the README promises.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

const MANIFEST: &str = include_str!("../../deploy/kubernetes/meshnet.yaml");

fn typed<T: DeserializeOwned + Serialize>(doc: &Value) -> T {
    let t: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{} does not match its schema: {e}", doc["kind"]));
    let back = serde_json::to_value(&t).unwrap();
    assert_eq!(
        &back, doc,
        "{} lost or changed fields in the schema round trip",
        doc["kind"]
    );
    t
}

fn documents() -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(MANIFEST).expect("meshnet.yaml is YAML")
}

#[test]
fn every_document_matches_the_kubernetes_schema() {
    let docs = documents();
    let mut kinds = Vec::new();
    for doc in &docs {
        let kind = doc["kind"]
            .as_str()
            .expect("every document has a kind")
            .to_owned();
        match kind.as_str() {
            "ServiceAccount" => drop(typed::<ServiceAccount>(doc)),
            "ClusterRole" => drop(typed::<ClusterRole>(doc)),
            "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(doc)),
            "Role" => drop(typed::<Role>(doc)),
            "RoleBinding" => drop(typed::<RoleBinding>(doc)),
            "DaemonSet" => drop(typed::<DaemonSet>(doc)),
            other => panic!("unexpected kind {other}"),
        }
        kinds.push(kind);
    }
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "DaemonSet"
        ]
    );
}

#[test]
fn the_daemonset_is_weave_kube_shaped() {
    let docs = documents();
    let ds: DaemonSet = typed(docs.iter().find(|d| d["kind"] == "DaemonSet").unwrap());
    let spec = ds.spec.unwrap().template.spec.unwrap();
    assert_eq!(spec.host_network, Some(true));
    assert_eq!(spec.service_account_name.as_deref(), Some("meshnet"));
    let init = &spec.init_containers.unwrap()[0];
    let cmd = init.command.clone().unwrap().join(" ");
    assert!(cmd.starts_with("meshnet setup-cni"), "{cmd}");
    assert!(
        cmd.contains("--conf-dir=/host/etc/cni/net.d")
            && cmd.contains("--bin-dir=/host/opt/cni/bin")
    );
    let main = &spec.containers[0];
    for c in [init, main] {
        assert_eq!(
            c.security_context.as_ref().and_then(|s| s.privileged),
            Some(true),
            "{}",
            c.name
        );
    }
    let script = main.args.clone().unwrap().join("\n");
    for needle in [
        "meshnet kube-peers",
        "--ipalloc-init \"consensus=$NODES\"",
        "--conn-limit",
        "meshnet kube-reclaim",
        "--foreground",
    ] {
        assert!(
            script.contains(needle),
            "the router's script lacks {needle}:\n{script}"
        );
    }
    let env: Vec<String> = main
        .env
        .clone()
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(env.contains(&"NODE_NAME".to_string()));
    let volumes = spec.volumes.unwrap();
    let data = volumes
        .iter()
        .find(|v| v.name == "data")
        .expect("a data volume");
    assert_eq!(
        data.host_path.as_ref().unwrap().path,
        "/var/lib/meshnet",
        "the data dir persists on the host"
    );
    let mounts = main.volume_mounts.clone().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m.name == "data" && m.mount_path == "/var/lib/meshnet")
    );
    assert!(
        mounts
            .iter()
            .any(|m| m.name == "run" && m.mount_path == "/run/meshnet")
    );
}

#[test]
fn rbac_grants_what_kube_peers_and_kube_reclaim_use() {
    let docs = documents();
    let cr: ClusterRole = typed(docs.iter().find(|d| d["kind"] == "ClusterRole").unwrap());
    let rules = cr.rules.unwrap();
    assert!(rules.iter().any(
        |r| r.resources.as_ref().unwrap().contains(&"nodes".to_string())
            && r.verbs.contains(&"list".to_string())
    ));
    let role: Role = typed(docs.iter().find(|d| d["kind"] == "Role").unwrap());
    let verbs: Vec<String> = role
        .rules
        .unwrap()
        .into_iter()
        .flat_map(|r| r.verbs)
        .collect();
    for v in ["create", "get", "update"] {
        assert!(verbs.contains(&v.to_string()), "configmaps {v}");
    }
}
