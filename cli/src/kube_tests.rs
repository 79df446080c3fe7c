//! kube-peers and kube-reclaim against a tiny local HTTP server that
//! answers as the Kubernetes API does: recorded documents (NodeList,
//! Status 404/409, in `kube_fixtures/`) and a ConfigMap kept with real
//! resourceVersion semantics (a replace with a stale version is a 409).
//! No API server can run on these machines; the kube-rs client under test
//! is the real one. The same server plays the router's `/report` and
//! `DELETE /peer/<name>`, recording which peers were removed.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use super::*;

const NODES: &str = include_str!("kube_fixtures/nodes.json");
const NOT_FOUND: &str = include_str!("kube_fixtures/configmap-not-found.json");
const CONFLICT: &str = include_str!("kube_fixtures/configmap-conflict.json");
const CM_PATH: &str = "/api/v1/namespaces/kube-system/configmaps";
const OUR_PEER: &str = "aa:00:00:00:00:01";

#[derive(Default)]
struct Fake {
    configmap: Option<Value>,
    version: u64,
    /// Replaces to refuse with 409 (someone else wrote first).
    conflicts: usize,
    rmpeer: Vec<String>,
    replaces: usize,
}

type Shared = Arc<Mutex<Fake>>;

fn answer(code: u16, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn handle(fake: &Shared, method: &str, path: &str, body: &[u8]) -> Response<Full<Bytes>> {
    let mut f = fake.lock().unwrap();
    let named = format!("{CM_PATH}/meshnet");
    match (method, path) {
        ("GET", "/api/v1/nodes") => answer(200, NODES.into()),
        ("GET", p) if p == named => match &f.configmap {
            Some(cm) => answer(200, cm.to_string()),
            None => answer(404, NOT_FOUND.into()),
        },
        ("POST", CM_PATH) => {
            if f.configmap.is_some() {
                return answer(409, CONFLICT.into());
            }
            let mut cm: Value = serde_json::from_slice(body).unwrap();
            f.version += 1;
            cm["metadata"]["resourceVersion"] = json!(f.version.to_string());
            cm["metadata"]["namespace"] = json!("kube-system");
            f.configmap = Some(cm.clone());
            answer(201, cm.to_string())
        }
        ("PUT", p) if p == named => {
            f.replaces += 1;
            if f.conflicts > 0 {
                f.conflicts -= 1;
                f.version += 1;
                let v = f.version.to_string();
                if let Some(cm) = f.configmap.as_mut() {
                    cm["metadata"]["resourceVersion"] = json!(v);
                }
                return answer(409, CONFLICT.into());
            }
            let mut cm: Value = serde_json::from_slice(body).unwrap();
            if cm["metadata"]["resourceVersion"] != json!(f.version.to_string()) {
                return answer(409, CONFLICT.into());
            }
            f.version += 1;
            cm["metadata"]["resourceVersion"] = json!(f.version.to_string());
            f.configmap = Some(cm.clone());
            answer(200, cm.to_string())
        }
        ("GET", "/report") => answer(200, json!({"Router": {"Name": OUR_PEER}}).to_string()),
        ("DELETE", p) if p.starts_with("/peer/") => {
            f.rmpeer.push(p["/peer/".len()..].to_owned());
            answer(200, "4096 IPs taken over\n".into())
        }
        _ => answer(404, format!("{{\"unexpected\":\"{method} {path}\"}}")),
    }
}

/// Serves one connection to the fake.
fn spawn_conn<S>(stream: S, fake: Shared)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let fake = fake.clone();
            async move {
                let method = req.method().to_string();
                let path = req.uri().path().to_owned();
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                Ok::<_, Infallible>(handle(&fake, &method, &path, &body))
            }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), svc)
            .await;
    });
}

/// Starts the fake on a loopback port (the Kubernetes API and the router's
/// read-only API); returns its address.
async fn serve(fake: Shared) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            spawn_conn(stream, fake.clone());
        }
    });
    addr
}

/// Also serves the fake as the router's control socket (where `rmpeer`
/// goes) in a fresh run dir; returns the dir (removed on drop).
async fn serve_socket(fake: Shared) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(meshnet_router::api_client::API_SOCKET);
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            spawn_conn(stream, fake.clone());
        }
    });
    dir
}

fn client_for(addr: std::net::SocketAddr) -> Client {
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    Client::try_from(config).unwrap()
}

fn env_for(addr: std::net::SocketAddr, run_dir: &std::path::Path) -> EnvArgs {
    EnvArgs {
        run_dir: run_dir.to_path_buf(),
        data_dir: "/nonexistent/data".into(),
        http_addr: addr,
    }
}

fn at() -> Bookkeeping {
    Bookkeeping {
        namespace: "kube-system".into(),
        configmap: "meshnet".into(),
    }
}

fn peer_list(fake: &Shared) -> Vec<PeerEntry> {
    let f = fake.lock().unwrap();
    let cm = f.configmap.as_ref().expect("the ConfigMap exists");
    serde_json::from_str(
        cm["metadata"]["annotations"][PEERS_ANNOTATION]
            .as_str()
            .unwrap(),
    )
    .unwrap()
}

fn entry(peer: &str, node: &str) -> PeerEntry {
    PeerEntry {
        peer_name: peer.into(),
        node_name: node.into(),
    }
}

#[tokio::test]
async fn peers_are_the_other_nodes_internal_else_external_addresses() {
    let fake = Shared::default();
    let client = client_for(serve(fake).await);
    let got = peers(&client, Some("node-1")).await.unwrap();
    let want: Vec<IpAddr> = vec![
        "192.0.2.2".parse().unwrap(),
        "198.51.100.3".parse().unwrap(),
    ];
    assert_eq!(got, want);
    assert_eq!(peers(&client, None).await.unwrap().len(), 3);
}

#[tokio::test]
async fn reclaim_registers_us_then_takes_over_peers_of_deleted_nodes() {
    let fake = Shared::default();
    let addr = serve(fake.clone()).await;
    let run_dir = serve_socket(fake.clone()).await;
    let (client, env) = (client_for(addr), env_for(addr, run_dir.path()));

    // First start: no ConfigMap yet; we are added, nobody is reclaimed.
    let done = reclaim(&client, &env, &at(), "node-1", OUR_PEER)
        .await
        .unwrap();
    assert_eq!(done, Reclaimed::default());
    assert_eq!(peer_list(&fake), [entry(OUR_PEER, "node-1")]);
    // Again: idempotent, no write.
    let writes = fake.lock().unwrap().replaces;
    reclaim(&client, &env, &at(), "node-1", OUR_PEER)
        .await
        .unwrap();
    assert_eq!(fake.lock().unwrap().replaces, writes);

    // Two routers whose nodes were deleted; one is being reclaimed by
    // live node-2 already. One write of ours loses a race.
    {
        let mut f = fake.lock().unwrap();
        let cm = f.configmap.as_mut().unwrap();
        let list = vec![
            entry(OUR_PEER, "node-1"),
            entry("bb:00:00:00:00:02", "node-gone"),
            entry("cc:00:00:00:00:03", "node-also-gone"),
            entry("dd:00:00:00:00:04", "node-2"),
        ];
        cm["metadata"]["annotations"][PEERS_ANNOTATION] =
            json!(serde_json::to_string(&list).unwrap());
        cm["metadata"]["annotations"][lock_key("cc:00:00:00:00:03")] = json!("node-2");
        f.conflicts = 1;
    }
    let done = reclaim(&client, &env, &at(), "node-1", OUR_PEER)
        .await
        .unwrap();
    assert_eq!(done.removed, ["bb:00:00:00:00:02"]);
    assert_eq!(done.left_to_others, ["cc:00:00:00:00:03"]);
    assert_eq!(fake.lock().unwrap().rmpeer, ["bb:00:00:00:00:02"]);
    assert_eq!(
        peer_list(&fake),
        [
            entry(OUR_PEER, "node-1"),
            entry("cc:00:00:00:00:03", "node-also-gone"),
            entry("dd:00:00:00:00:04", "node-2"),
        ]
    );
    let f = fake.lock().unwrap();
    let ann = &f.configmap.as_ref().unwrap()["metadata"]["annotations"];
    assert!(
        ann.get(lock_key("bb:00:00:00:00:02")).is_none(),
        "lock released: {ann}"
    );
    assert_eq!(ann[lock_key("cc:00:00:00:00:03")], "node-2");
}

#[tokio::test]
async fn a_lock_held_by_a_deleted_node_is_taken_over() {
    let fake = Shared::default();
    let addr = serve(fake.clone()).await;
    let run_dir = serve_socket(fake.clone()).await;
    let (client, env) = (client_for(addr), env_for(addr, run_dir.path()));
    reclaim(&client, &env, &at(), "node-1", OUR_PEER)
        .await
        .unwrap();
    {
        let mut f = fake.lock().unwrap();
        let cm = f.configmap.as_mut().unwrap();
        let list = vec![
            entry(OUR_PEER, "node-1"),
            entry("ee:00:00:00:00:05", "node-gone"),
        ];
        cm["metadata"]["annotations"][PEERS_ANNOTATION] =
            json!(serde_json::to_string(&list).unwrap());
        // Its reclaimer died with its node.
        cm["metadata"]["annotations"][lock_key("ee:00:00:00:00:05")] = json!("node-dead-too");
    }
    let done = reclaim(&client, &env, &at(), "node-1", OUR_PEER)
        .await
        .unwrap();
    assert_eq!(done.removed, ["ee:00:00:00:00:05"]);
    assert_eq!(peer_list(&fake), [entry(OUR_PEER, "node-1")]);
}

#[test]
fn fixtures_decode_as_the_api_types() {
    let nodes: k8s_openapi::List<Node> = serde_json::from_str(NODES).unwrap();
    assert_eq!(nodes.items.len(), 3);
    assert_eq!(
        node_addr(&nodes.items[1]),
        Some("192.0.2.2".parse().unwrap())
    );
    assert_eq!(
        node_addr(&nodes.items[2]),
        Some("198.51.100.3".parse().unwrap())
    );
    for status in [NOT_FOUND, CONFLICT] {
        let s: kube::core::Status = serde_json::from_str(status).unwrap();
        assert!(s.code == 404 || s.code == 409);
    }
}
