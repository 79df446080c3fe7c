//! What the proxy rewrites, as pure functions: which paths are
//! intercepted, which containers go on the mesh with which addresses, and
//! the `containers/create` body rewrite that puts the wait shim first.

use std::path::Path;

use serde_json::Value;

/// Where the shim directory is mounted in containers, and the shim itself.
/// Weave's paths, so images and scripts written for weave keep working.
pub const SHIM_MOUNT: &str = "/w";
/// The shim's path inside containers: their entrypoint's first word.
pub const SHIM_PATH: &str = "/w/w";
/// Label naming the proxy (its socket) that created a container, so that
/// only that proxy attaches it on Docker-initiated restarts and releases its
/// addresses (several routers, each with a proxy, may share one engine).
pub const PROXY_LABEL: &str = "works.meshnet.proxy";
/// Container environment variables naming the mesh addresses; ours wins.
pub const CIDR_VARS: [&str; 2] = ["MESHNET_CIDR", "WEAVE_CIDR"];

/// Why a request could not be rewritten.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InterceptError {
    #[error("the request body is not a JSON object: {0}")]
    BadJson(String),
    #[error(
        "invalid address {addr:?} in {var}: use CIDR notation such as 10.2.1.1/24, ip:CIDR, net:CIDR, net:default or none"
    )]
    BadAddr { var: String, addr: String },
    #[error("No command specified")]
    NoCommand,
}

/// The requests the proxy treats specially.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `POST [/vX.Y]/containers/create`
    Create,
    /// `POST [/vX.Y]/containers/{id}/start` or `/restart`
    Start(&'a str),
    /// `GET [/vX.Y]/containers/{id}/json` (`docker inspect`)
    Inspect,
    /// `GET [/vX.Y]/exec/{id}/json` (exec inspect, which `docker exec` asks
    /// for its exit code)
    ExecInspect,
    /// Everything else: passed through untouched.
    Other,
}

/// Classifies a request path (the method is not checked, as in weave).
pub fn route(path: &str) -> Route<'_> {
    let rest = strip_version(path);
    if let Some(exec) = rest.strip_prefix("/exec/") {
        return match exec.split_once('/') {
            Some((id, "json")) if !id.is_empty() => Route::ExecInspect,
            _ => Route::Other,
        };
    }
    let Some(rest) = rest.strip_prefix("/containers/") else {
        return Route::Other;
    };
    if rest == "create" {
        return Route::Create;
    }
    match rest.split_once('/') {
        Some((id, "start" | "restart")) if !id.is_empty() => Route::Start(id),
        Some((id, "json")) if !id.is_empty() => Route::Inspect,
        _ => Route::Other,
    }
}

/// Drops an API version prefix such as `/v1.41`.
fn strip_version(path: &str) -> &str {
    if let Some(rest) = path.strip_prefix("/v") {
        let end = rest.find('/').unwrap_or(rest.len());
        let (version, tail) = rest.split_at(end);
        let numeric = !version.is_empty()
            && version
                .split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if numeric {
            return tail;
        }
    }
    path
}

pub use meshnet_router::addrspec::AddrSpec;

/// Parses one address of a `MESHNET_CIDR`/`WEAVE_CIDR` list.
pub fn parse_addr(var: &str, s: &str) -> Result<AddrSpec, InterceptError> {
    s.parse().map_err(|_| InterceptError::BadAddr {
        var: var.into(),
        addr: s.into(),
    })
}

/// The mesh addresses of a container from its `Env` (`KEY=VALUE` strings)
/// and network mode; `None` leaves it off the mesh. Only containers on
/// Docker's own bridge (or with no network) qualify: `host`,
/// `container:...` and plugin networks are someone else's business.
pub fn mesh_addrs(
    env: &[String],
    network_mode: &str,
    default_ipalloc: bool,
) -> Result<Option<Vec<AddrSpec>>, InterceptError> {
    if !matches!(network_mode, "" | "default" | "bridge" | "none") {
        return Ok(None);
    }
    let value = CIDR_VARS.iter().find_map(|var| {
        env.iter()
            .find_map(|kv| kv.strip_prefix(var)?.strip_prefix('='))
            .map(|v| (*var, v.trim()))
    });
    match value {
        None if default_ipalloc => Ok(Some(vec![AddrSpec::Default])),
        None => Ok(None),
        Some((_, "none")) => Ok(None),
        // Weave: an empty variable means the default allocation.
        Some((_, "")) => Ok(Some(vec![AddrSpec::Default])),
        Some((var, list)) => list
            .split_whitespace()
            .map(|a| parse_addr(var, a))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
    }
}

/// Docker's string-or-array fields (`Entrypoint`, `Cmd`).
pub fn str_slice(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// The parts of a create request that decide what happens to it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateRequest {
    pub image: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub network_mode: String,
}

/// Reads a create body.
pub fn parse_create(body: &Value) -> Result<CreateRequest, InterceptError> {
    let obj = body
        .as_object()
        .ok_or_else(|| InterceptError::BadJson("expected an object".into()))?;
    Ok(CreateRequest {
        image: obj
            .get("Image")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        entrypoint: str_slice(obj.get("Entrypoint")),
        cmd: str_slice(obj.get("Cmd")),
        env: str_slice(obj.get("Env")),
        network_mode: obj
            .get("HostConfig")
            .and_then(|h| h.get("NetworkMode"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    })
}

/// The image's own entrypoint and command, when the request sets neither.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

/// Reads `Config.Entrypoint` and `Config.Cmd` from `GET /images/{name}/json`.
pub fn image_defaults(inspect: &Value) -> ImageDefaults {
    let config = inspect.get("Config");
    ImageDefaults {
        entrypoint: str_slice(config.and_then(|c| c.get("Entrypoint"))),
        cmd: str_slice(config.and_then(|c| c.get("Cmd"))),
    }
}

/// Rewrites a create body so the shim runs first: bind-mounts `shim_dir`
/// read-only at [`SHIM_MOUNT`], prefixes the entrypoint with [`SHIM_PATH`]
/// and labels the container with `owner` ([`PROXY_LABEL`]). Docker ignores the image's `Cmd` once a request sets an
/// entrypoint, so when the request had none, the image's entrypoint and
/// command are filled in from `image` (weave does the same).
pub fn rewrite_create(
    body: &mut Value,
    image: Option<&ImageDefaults>,
    shim_dir: &Path,
    owner: &str,
) -> Result<(), InterceptError> {
    let req = parse_create(body)?;
    let obj = body
        .as_object_mut()
        .ok_or_else(|| InterceptError::BadJson("expected an object".into()))?;
    let mut entrypoint = req.entrypoint;
    let mut cmd = req.cmd;
    if entrypoint.first().map(String::as_str) == Some(SHIM_PATH) {
        return Ok(());
    }
    if entrypoint.is_empty()
        && let Some(image) = image
    {
        entrypoint = image.entrypoint.clone();
        if cmd.is_empty() {
            cmd = image.cmd.clone();
        }
    }
    if entrypoint.is_empty() && cmd.is_empty() {
        return Err(InterceptError::NoCommand);
    }
    entrypoint.insert(0, SHIM_PATH.to_string());
    obj.insert("Entrypoint".into(), Value::from(entrypoint));
    obj.insert("Cmd".into(), Value::from(cmd));

    let host_config = obj
        .entry("HostConfig")
        .or_insert_with(|| Value::Object(Default::default()));
    if host_config.is_null() {
        *host_config = Value::Object(Default::default());
    }
    let Some(host_config) = host_config.as_object_mut() else {
        return Err(InterceptError::BadJson(
            "HostConfig is not an object".into(),
        ));
    };
    let bind = format!("{}:{SHIM_MOUNT}:ro", shim_dir.display());
    let binds = host_config
        .entry("Binds")
        .or_insert_with(|| Value::Array(Vec::new()));
    match binds {
        Value::Array(a) => a.push(Value::from(bind)),
        other => *other = Value::from(vec![bind]),
    }
    let labels = obj
        .entry("Labels")
        .or_insert_with(|| Value::Object(Default::default()));
    if !labels.is_object() {
        *labels = Value::Object(Default::default());
    }
    if let Some(l) = labels.as_object_mut() {
        l.insert(PROXY_LABEL.into(), Value::from(owner));
    }
    Ok(())
}

/// Docker's limit on `Domainname`.
pub const MAX_DOMAINNAME: usize = 64;

/// Points a created container at meshnet's DNS (weave's `setWeaveDNS`):
/// names the host `name` in `domain` when the request set no `Hostname` /
/// `Domainname`; with a server address, appends it to `HostConfig.Dns`
/// and searches `domain` when no `DnsSearch` is given.
pub fn set_dns(
    body: &mut Value,
    name: Option<&str>,
    dns_addr: Option<&str>,
    domain: &str,
) -> Result<(), InterceptError> {
    let domain = domain.trim_end_matches('.');
    let obj = body
        .as_object_mut()
        .ok_or_else(|| InterceptError::BadJson("expected an object".into()))?;
    let empty = |v: Option<&Value>| v.and_then(Value::as_str).is_none_or(str::is_empty);
    if let Some(n) = name.filter(|n| !n.is_empty() && n.len() <= 63 && !n.contains('.'))
        && empty(obj.get("Hostname"))
    {
        obj.insert("Hostname".into(), Value::from(n));
    }
    // A hostname with a dot is a whole FQDN already (`docker run -h
    // seetwo.weave.local`): no domain goes behind it.
    let fqdn_given = obj
        .get("Hostname")
        .and_then(Value::as_str)
        .is_some_and(|h| h.contains('.'));
    if empty(obj.get("Domainname")) && !fqdn_given && domain.len() <= MAX_DOMAINNAME {
        obj.insert("Domainname".into(), Value::from(domain));
    }
    let Some(dns_addr) = dns_addr else {
        return Ok(());
    };
    let host_config = obj
        .entry("HostConfig")
        .or_insert_with(|| Value::Object(Default::default()));
    if host_config.is_null() {
        *host_config = Value::Object(Default::default());
    }
    let Some(hc) = host_config.as_object_mut() else {
        return Err(InterceptError::BadJson(
            "HostConfig is not an object".into(),
        ));
    };
    let mut dns = str_slice(hc.get("Dns"));
    if !dns.iter().any(|d| d == dns_addr) {
        dns.push(dns_addr.to_string());
    }
    hc.insert("Dns".into(), Value::from(dns));
    if str_slice(hc.get("DnsSearch")).is_empty() {
        hc.insert("DnsSearch".into(), Value::from(vec![domain.to_string()]));
    }
    Ok(())
}

/// `Config.<key>` of a container inspect answer as a string ("" when it
/// is missing or no string).
pub fn config_str<'a>(inspect: &'a Value, key: &str) -> &'a str {
    inspect
        .get("Config")
        .and_then(|c| c.get(key))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The names DNS registers for a container (from `GET /containers/{id}/json`):
/// its name, its `Hostname.Domainname` when it has a domain, and its
/// network aliases.
pub fn dns_names(inspect: &Value) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut add = |n: &str| {
        let n = n.trim_start_matches('/');
        if !n.is_empty() && !names.iter().any(|x| x == n) {
            names.push(n.to_string());
        }
    };
    if let Some(n) = inspect.get("Name").and_then(Value::as_str) {
        add(n);
    }
    let (host, domain) = (
        config_str(inspect, "Hostname"),
        config_str(inspect, "Domainname"),
    );
    if !host.is_empty() && !domain.is_empty() {
        add(&format!("{host}.{domain}"));
    } else if host.contains('.') {
        // An FQDN given as the hostname (weave names it as is).
        add(host);
    }
    if let Some(nets) = inspect
        .get("NetworkSettings")
        .and_then(|n| n.get("Networks"))
        .and_then(Value::as_object)
    {
        for net in nets.values() {
            for alias in str_slice(net.get("Aliases")) {
                add(&alias);
            }
        }
    }
    names
}

/// The process of a running container, from `GET /containers/{id}/json`.
pub fn running_pid(inspect: &Value) -> Option<u32> {
    let state = inspect.get("State")?;
    if state.get("Running").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    let pid = u32::try_from(state.get("Pid")?.as_u64()?).ok()?;
    (pid != 0).then_some(pid)
}

/// `--rewrite-inspect` (weave's): puts the mesh interface's MAC and first
/// address where `docker inspect` shows a container's network, i.e.
/// `NetworkSettings.MacAddress`, `.IPAddress` and `.IPPrefixLen`. A body
/// with no `NetworkSettings` object is left alone.
pub fn rewrite_inspect(inspect: &mut Value, mac: &str, addr: ipnet::Ipv4Net) {
    let Some(settings) = inspect
        .get_mut("NetworkSettings")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    settings.insert("MacAddress".into(), Value::from(mac));
    settings.insert("IPAddress".into(), Value::from(addr.addr().to_string()));
    settings.insert("IPPrefixLen".into(), Value::from(addr.prefix_len()));
}

/// The container inside an inspect answer that `--rewrite-inspect`
/// rewrites: the answer itself for `docker inspect`; for an exec inspect,
/// its `Container` object, which engines of API 1.21 and older embed (newer
/// ones give only `ContainerID`: nothing to rewrite, as in weave).
pub fn inspected_container<'a>(answer: &'a mut Value, route: &Route<'_>) -> Option<&'a mut Value> {
    match route {
        Route::Inspect => Some(answer),
        Route::ExecInspect => answer.get_mut("Container").filter(|c| c.is_object()),
        _ => None,
    }
}

/// True when a container (from `GET /containers/{id}/json`) was created
/// through the proxy, so its first process waits for the mesh.
pub fn waits_for_mesh(inspect: &Value) -> bool {
    let entrypoint = str_slice(inspect.get("Config").and_then(|c| c.get("Entrypoint")));
    entrypoint.first().map(String::as_str) == Some(SHIM_PATH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::Ipv4Net;
    use serde_json::json;

    #[test]
    fn dns_settings_as_weave_sets_them() {
        let mut body = json!({"Image": "x", "HostConfig": {"Dns": ["8.8.8.8"]}});
        set_dns(
            &mut body,
            Some("pingme"),
            Some("172.17.0.1"),
            "weave.local.",
        )
        .unwrap();
        assert_eq!(body["Hostname"], "pingme");
        assert_eq!(body["Domainname"], "weave.local");
        assert_eq!(body["HostConfig"]["Dns"], json!(["8.8.8.8", "172.17.0.1"]));
        assert_eq!(body["HostConfig"]["DnsSearch"], json!(["weave.local"]));
        // What the user gave stays.
        let mut body = json!({"Hostname": "web", "Domainname": "example.com",
            "HostConfig": {"DnsSearch": ["example.com"], "Dns": ["172.17.0.1"]}});
        set_dns(&mut body, Some("c1"), Some("172.17.0.1"), "weave.local.").unwrap();
        assert_eq!(body["Hostname"], "web");
        assert_eq!(body["Domainname"], "example.com");
        assert_eq!(body["HostConfig"]["Dns"], json!(["172.17.0.1"]));
        assert_eq!(body["HostConfig"]["DnsSearch"], json!(["example.com"]));
        // No name, or one that is no hostname: no Hostname.
        let mut body = json!({"HostConfig": null});
        set_dns(&mut body, Some("a.b"), Some("10.0.0.1"), "weave.local.").unwrap();
        assert!(body.get("Hostname").is_none());
        // `docker run -h seetwo.weave.local`: a whole FQDN, no domain behind it.
        let mut body = json!({"Hostname": "seetwo.weave.local"});
        set_dns(&mut body, Some("c2"), None, "weave.local.").unwrap();
        assert_eq!(body["Hostname"], "seetwo.weave.local");
        assert!(body.get("Domainname").is_none(), "{body}");
        // Names gossiped but not served here: the domain, no resolver.
        let mut body = json!({});
        set_dns(&mut body, Some("c"), None, "weave.local.").unwrap();
        assert_eq!(body["Domainname"], "weave.local");
        assert!(body.get("HostConfig").is_none());
    }

    #[test]
    fn inspect_shows_the_mesh_address_and_mac() {
        let mut inspect = json!({"Id": "3f2c", "State": {"Running": true, "Pid": 4321},
            "NetworkSettings": {"IPAddress": "172.17.0.2", "IPPrefixLen": 16,
                "MacAddress": "02:42:ac:11:00:02", "Networks": {"bridge": {}}}});
        assert_eq!(running_pid(&inspect), Some(4321));
        let addr: ipnet::Ipv4Net = "10.32.0.1/12".parse().unwrap();
        rewrite_inspect(&mut inspect, "ae:e3:07:9c:8c:d4", addr);
        let ns = &inspect["NetworkSettings"];
        assert_eq!(ns["IPAddress"], "10.32.0.1");
        assert_eq!(ns["IPPrefixLen"], 12);
        assert_eq!(ns["MacAddress"], "ae:e3:07:9c:8c:d4");
        assert_eq!(ns["Networks"], json!({"bridge": {}}));
        // Newer engines drop the top-level fields: they come back.
        let mut bare = json!({"NetworkSettings": {}});
        rewrite_inspect(&mut bare, "ae:e3:07:9c:8c:d4", addr);
        assert_eq!(bare["NetworkSettings"]["IPAddress"], "10.32.0.1");
        // Nothing to rewrite: untouched, no panic.
        for odd in [json!({}), json!({"NetworkSettings": null}), json!([1])] {
            let mut v = odd.clone();
            rewrite_inspect(&mut v, "ae:e3:07:9c:8c:d4", addr);
            assert_eq!(v, odd);
        }
        for not_running in [
            json!({"State": {"Running": false, "Pid": 0}}),
            json!({"State": {"Running": true, "Pid": 0}}),
            json!({"State": {"Running": true, "Pid": -1}}),
            json!({"State": {"Running": true, "Pid": 99999999999u64}}),
            json!({"State": "up"}),
            json!(null),
        ] {
            assert_eq!(running_pid(&not_running), None, "{not_running}");
        }
    }

    #[test]
    fn dns_names_of_a_container() {
        let inspect = json!({"Name": "/pingme",
            "Config": {"Hostname": "web", "Domainname": "weave.local"},
            "NetworkSettings": {"Networks": {"bridge": {"Aliases": ["www", "pingme"]}}}});
        assert_eq!(dns_names(&inspect), ["pingme", "web.weave.local", "www"]);
        let bare = json!({"Name": "/c", "Config": {"Hostname": "3f2c9a1b", "Domainname": ""}});
        assert_eq!(dns_names(&bare), ["c"]);
        let fqdn =
            json!({"Name": "/c2", "Config": {"Hostname": "seetwo.weave.local", "Domainname": ""}});
        assert_eq!(dns_names(&fqdn), ["c2", "seetwo.weave.local"]);
    }

    #[test]
    fn routes_with_and_without_version_prefix() {
        assert_eq!(route("/containers/create"), Route::Create);
        assert_eq!(route("/v1.41/containers/create"), Route::Create);
        assert_eq!(route("/v1.41/containers/abc/start"), Route::Start("abc"));
        assert_eq!(route("/containers/box1/restart"), Route::Start("box1"));
        assert_eq!(route("/v1.41/containers/abc/stop"), Route::Other);
        assert_eq!(route("/v1.41/containers/json"), Route::Other);
        assert_eq!(route("/v1.41/containers/c1/json"), Route::Inspect);
        assert_eq!(route("/containers/abc/json"), Route::Inspect);
        assert_eq!(route("/containers//json"), Route::Other);
        assert_eq!(route("/containers/abc/json/x"), Route::Other);
        assert_eq!(route("/_ping"), Route::Other);
        assert_eq!(route("/version/containers/create"), Route::Other);
        assert_eq!(route("/containers//start"), Route::Other);
        assert_eq!(route("/vx.y/containers/create"), Route::Other);
        assert_eq!(route("/v1.41/exec/e1/json"), Route::ExecInspect);
        assert_eq!(route("/exec/e1/json"), Route::ExecInspect);
        assert_eq!(route("/exec/e1/start"), Route::Other);
        assert_eq!(route("/exec//json"), Route::Other);
        assert_eq!(route("/exec/e1/json/x"), Route::Other);
    }

    #[test]
    fn exec_inspect_rewrites_only_an_embedded_container() {
        let container = json!({"State": {"Running": true, "Pid": 7},
            "NetworkSettings": {"IPAddress": "172.17.0.2"}});
        let mut old_api = json!({"ID": "e1", "ExitCode": 0, "Container": container});
        let found = inspected_container(&mut old_api, &Route::ExecInspect).unwrap();
        assert_eq!(running_pid(found), Some(7));
        rewrite_inspect(found, "ae:e3:07:9c:8c:d4", "10.32.0.1/12".parse().unwrap());
        assert_eq!(
            old_api["Container"]["NetworkSettings"]["IPAddress"],
            "10.32.0.1"
        );
        assert_eq!(old_api["ExitCode"], 0);
        // Today's engines: no Container object, nothing to rewrite.
        for mut new_api in [
            json!({"ID": "e1", "ContainerID": "3f2c", "ExitCode": 3}),
            json!({"ID": "e1", "Container": "3f2c"}),
        ] {
            assert!(inspected_container(&mut new_api, &Route::ExecInspect).is_none());
        }
        let mut plain = json!({"Id": "c"});
        assert!(inspected_container(&mut plain, &Route::Inspect).is_some());
        assert!(inspected_container(&mut plain, &Route::Other).is_none());
    }

    fn env(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn addresses_come_from_the_environment_as_in_weave() {
        let net = |s: &str| s.parse::<Ipv4Net>().unwrap();
        assert_eq!(
            mesh_addrs(&env(&["PATH=/bin"]), "", true).unwrap(),
            Some(vec![AddrSpec::Default])
        );
        assert_eq!(mesh_addrs(&env(&[]), "", false).unwrap(), None);
        assert_eq!(
            mesh_addrs(&env(&["WEAVE_CIDR=none"]), "", true).unwrap(),
            None
        );
        assert_eq!(
            mesh_addrs(&env(&["MESHNET_CIDR=none"]), "", true).unwrap(),
            None
        );
        assert_eq!(
            mesh_addrs(&env(&["WEAVE_CIDR="]), "", false).unwrap(),
            Some(vec![AddrSpec::Default])
        );
        assert_eq!(
            mesh_addrs(
                &env(&["MESHNET_CIDR=10.2.1.1/24 net:10.3.0.0/16 ip:10.4.0.9/8 net:default"]),
                "bridge",
                false
            )
            .unwrap(),
            Some(vec![
                AddrSpec::Ip(net("10.2.1.1/24")),
                AddrSpec::Net(net("10.3.0.0/16")),
                AddrSpec::Ip(net("10.4.0.9/8")),
                AddrSpec::Default,
            ])
        );
        // Ours wins over weave's.
        assert_eq!(
            mesh_addrs(
                &env(&["WEAVE_CIDR=none", "MESHNET_CIDR=10.9.0.1/24"]),
                "",
                true
            )
            .unwrap(),
            Some(vec![AddrSpec::Ip(net("10.9.0.1/24"))])
        );
        for mode in ["host", "container:abc", "mynet"] {
            assert_eq!(mesh_addrs(&env(&[]), mode, true).unwrap(), None, "{mode}");
        }
        let e = mesh_addrs(&env(&["WEAVE_CIDR=10.0.0.300/24"]), "", true).unwrap_err();
        assert!(e.to_string().contains("10.0.0.300/24"), "{e}");
        assert!(e.to_string().contains("WEAVE_CIDR"), "{e}");
    }

    #[test]
    fn create_fills_the_image_command_behind_the_shim() {
        let mut body = json!({"Image": "busybox", "Cmd": null, "Entrypoint": null,
            "HostConfig": {"Binds": ["/a:/b"], "NetworkMode": "default"}});
        let image = ImageDefaults {
            entrypoint: vec![],
            cmd: vec!["sh".into()],
        };
        rewrite_create(
            &mut body,
            Some(&image),
            Path::new("/run/meshnet/shim"),
            "/p.sock",
        )
        .unwrap();
        assert_eq!(body["Entrypoint"], json!(["/w/w"]));
        assert_eq!(body["Cmd"], json!(["sh"]));
        assert_eq!(
            body["HostConfig"]["Binds"],
            json!(["/a:/b", "/run/meshnet/shim:/w:ro"])
        );
        assert_eq!(body["Labels"], json!({ PROXY_LABEL: "/p.sock" }));
        assert!(waits_for_mesh(
            &json!({"Config": {"Entrypoint": ["/w/w", "sh"]}})
        ));
        assert!(!waits_for_mesh(&json!({"Config": {"Entrypoint": null}})));
    }

    #[test]
    fn create_keeps_a_requested_entrypoint_and_command() {
        let mut body = json!({"Image": "x", "Entrypoint": "/bin/app", "Cmd": ["-v"],
            "Labels": {"keep": "me"}});
        rewrite_create(&mut body, None, Path::new("/s"), "/p.sock").unwrap();
        assert_eq!(body["Entrypoint"], json!(["/w/w", "/bin/app"]));
        assert_eq!(body["Cmd"], json!(["-v"]));
        assert_eq!(body["HostConfig"]["Binds"], json!(["/s:/w:ro"]));
        assert_eq!(
            body["Labels"],
            json!({"keep": "me", PROXY_LABEL: "/p.sock"})
        );
        // Not wrapped twice.
        let before = body.clone();
        rewrite_create(&mut body, None, Path::new("/s"), "/p.sock").unwrap();
        assert_eq!(body, before);
    }

    #[test]
    fn create_with_an_image_entrypoint_keeps_the_request_command() {
        let mut body = json!({"Image": "x", "Cmd": ["arg"], "HostConfig": null});
        let image = ImageDefaults {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["default".into()],
        };
        rewrite_create(&mut body, Some(&image), Path::new("/s"), "/p.sock").unwrap();
        assert_eq!(body["Entrypoint"], json!(["/w/w", "/entry"]));
        assert_eq!(body["Cmd"], json!(["arg"]));
    }

    #[test]
    fn create_without_any_command_is_refused_like_docker() {
        let mut body = json!({"Image": "x"});
        let e = rewrite_create(
            &mut body,
            Some(&ImageDefaults::default()),
            Path::new("/s"),
            "/p",
        );
        assert_eq!(e, Err(InterceptError::NoCommand));
        assert!(matches!(
            rewrite_create(&mut json!([1]), None, Path::new("/s"), "/p"),
            Err(InterceptError::BadJson(_))
        ));
    }
}
