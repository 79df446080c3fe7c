//! Command-line definitions (clap). Flags and names follow weave's, so
//! `weave launch --password X host1` becomes `meshnet launch --password X host1`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// meshnet: one flat network for containers on many hosts (a weave-compatible mesh).
#[derive(Debug, Parser)]
#[command(name = "meshnet", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub env: EnvArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Where this router's files and API live; several routers on one machine
/// (one per network namespace) use different values.
#[derive(Debug, Args, Clone)]
pub struct EnvArgs {
    /// Directory for the pid file, log and sockets (meshnet-api.sock: the root-only control socket).
    #[arg(long, env = "MESHNET_RUN_DIR", default_value = meshnet_router::config::DEFAULT_RUN_DIR, global = true)]
    pub run_dir: PathBuf,
    /// Directory for persisted state (identity key, targets, IPAM).
    #[arg(long, env = "MESHNET_DATA_DIR", default_value = meshnet_router::config::DEFAULT_DATA_DIR, global = true)]
    pub data_dir: PathBuf,
    /// The router's read-only HTTP API address (changes go through the control socket)
    /// [env: MESHNET_HTTP_ADDR, WEAVE_HTTP_ADDR].
    #[arg(long, default_value = "127.0.0.1:6784", global = true)]
    pub http_addr: SocketAddr,
}

impl EnvArgs {
    /// The router's API: its control socket in the run dir (everything,
    /// root-only) and the TCP address (reads).
    pub fn api(&self) -> meshnet_router::api_client::Endpoint {
        meshnet_router::api_client::Endpoint::new(self.http_addr, &self.run_dir)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the router on this host, connecting to the given peers.
    Launch(Box<LaunchArgs>),
    /// Stop the router (state is kept; `launch` resumes it).
    Stop,
    /// Hand this peer's IP space to others, stop the router and forget all persisted state.
    Reset {
        /// Accepted for weave's command line; meshnet's reset never refuses.
        #[arg(long)]
        force: bool,
    },
    /// Show the router's status: summary, or `peers`, `connections`, `targets`, `ipam`, `dns`.
    Status {
        /// One of: peers, connections, targets, ipam, dns.
        sub: Option<String>,
        /// With `peers`: also show each peer's key fingerprint.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Print this router's public key as one authorized-keys line (`meshnet identity >> keys`).
    Identity,
    /// Re-read --authorized-keys (as SIGHUP does); connections of removed keys are dropped.
    Reload,
    /// Print the router's full state as JSON, or through a Go template:
    /// `report -f '{{.Router.Name}}'` (weave's field names; `{{json .IPAM}}` prints JSON).
    Report {
        /// A Go text/template executed over the report.
        #[arg(short = 'f', long = "format", value_name = "TEMPLATE")]
        format: Option<String>,
    },
    /// Add peers to connect to; `--replace` drops the previous list first.
    Connect {
        #[arg(long)]
        replace: bool,
        /// Peers as host[:port].
        peers: Vec<String>,
    },
    /// Stop reconnecting to these peers.
    Forget {
        #[arg(required = true)]
        peers: Vec<String>,
    },
    /// Attach a container to the mesh: `attach [ADDR...] CONTAINER`. ADDR is a CIDR, ip:CIDR,
    /// net:CIDR or net:default (the default when none is given); CONTAINER is a Docker name or
    /// id, netns:NAME or pid:N. Prints the addresses.
    Attach {
        /// Do not add the 224.0.0.0/4 multicast route to ethwe.
        #[arg(long)]
        no_multicast_route: bool,
        /// [ADDR...] CONTAINER
        #[arg(required = true, num_args = 1..)]
        args: Vec<String>,
    },
    /// Remove addresses from a container (all of them, and ethwe, when none are given).
    Detach {
        /// [ADDR...] CONTAINER
        #[arg(required = true, num_args = 1..)]
        args: Vec<String>,
    },
    /// List attached containers: `<id> <mac> <cidr>...`; the bridge itself is `weave:expose`.
    Ps { containers: Vec<String> },
    /// Give the host addresses on the overlay: `expose [ADDR...]` (CIDR, net:CIDR or none for
    /// one from the default subnet), with masquerading both ways; `-h FQDN` names them in DNS.
    /// Prints the IPs.
    #[command(disable_help_flag = true)]
    Expose {
        /// Route only; no NAT rules for these subnets.
        #[arg(long)]
        without_masquerade: bool,
        /// Name the exposed addresses in DNS (FQDN, or a single label that gets the domain).
        #[arg(short = 'h', long = "fqdn")]
        fqdn: Option<String>,
        /// Print help.
        #[arg(long, action = clap::ArgAction::Help)]
        help: Option<bool>,
        addrs: Vec<String>,
    },
    /// Remove the host's overlay addresses (all of them when none are given). Prints the IPs.
    Hide { addrs: Vec<String> },
    /// Take over the IP space of dead peers (peer name or nickname); prints how many IPs moved.
    Rmpeer {
        #[arg(required = true)]
        peers: Vec<String>,
    },
    /// Wait until the IP allocation ring is initialised (forces consensus).
    Prime,
    /// Print the version of this command and of the running router.
    Version,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion { shell: clap_complete::Shell },
    /// Run a demo mesh of three hosts (network namespaces) on this machine, then remove it (root).
    Demo,
    /// Print shell commands that point the Docker CLI at meshnet's proxy: `eval $(meshnet env)`;
    /// with --restore, the commands that point it back.
    Env {
        /// Print the command restoring the DOCKER_HOST saved by `eval $(meshnet env)`.
        #[arg(long)]
        restore: bool,
    },
    /// Print the Docker CLI flag for meshnet's proxy: `docker $(meshnet config) ps`.
    Config,
    /// Register DNS names: `dns-add [IP...] CONTAINER [-h FQDN]` (IPs default to the container's
    /// mesh addresses, the name to its hostname.domainname or name) or `dns-add IP... -h FQDN`
    /// (no container). A single-label name gets the DNS domain.
    #[command(disable_help_flag = true)]
    DnsAdd(DnsNameArgs),
    /// Remove DNS names: `dns-remove [IP...] CONTAINER [-h FQDN]` or `dns-remove IP... -h FQDN`
    /// (all of the container's names when no IP and no -h is given).
    #[command(disable_help_flag = true)]
    DnsRemove(DnsNameArgs),
    /// Look a name up in meshnet's DNS server; prints the addresses, one per line.
    DnsLookup {
        /// A name, qualified or not (`web` or `web.weave.local`).
        name: String,
    },
    /// Print the Docker flags that make a container use meshnet's DNS:
    /// `docker run $(meshnet dns-args) ...` (nothing when DNS is off).
    DnsArgs,
    /// Install the CNI plugin: this binary as meshnet, weave-net and meshnet-ipam in --bin-dir,
    /// and 10-meshnet.conflist (meshnet chained with portmap) in --conf-dir.
    SetupCni {
        /// Where the runtime reads network configurations.
        #[arg(long, default_value = "/etc/cni/net.d")]
        conf_dir: PathBuf,
        /// Where the runtime finds plugin binaries.
        #[arg(long, default_value = "/opt/cni/bin")]
        bin_dir: PathBuf,
        /// Hairpin mode on pod bridge ports (a pod reaching itself through a service).
        #[arg(long, env = "HAIRPIN_MODE", default_value_t = true, action = clap::ArgAction::Set)]
        hairpin_mode: bool,
    },
    /// Kubernetes: print the other nodes' addresses (InternalIP, else ExternalIP), for `launch`.
    KubePeers {
        /// This node, left out of the list (the DaemonSet passes spec.nodeName).
        #[arg(long, env = "NODE_NAME")]
        node_name: Option<String>,
    },
    /// Kubernetes: record this router in the peer list and take over (rmpeer) the IP space
    /// of peers whose node was deleted, under a lock kept in a ConfigMap annotation.
    KubeReclaim {
        /// This node (the DaemonSet passes spec.nodeName).
        #[arg(long, env = "NODE_NAME")]
        node_name: String,
        /// Namespace of the bookkeeping ConfigMap.
        #[arg(long, default_value = "kube-system")]
        namespace: String,
        /// Name of the bookkeeping ConfigMap.
        #[arg(long, default_value = "meshnet")]
        configmap: String,
    },
    /// Make the `weave` name: a symlink to this binary, next to it (or in --link-dir),
    /// so weave's scripts run unchanged.
    Setup {
        /// Directory for the `weave` link (default: this binary's directory).
        #[arg(long)]
        link_dir: Option<PathBuf>,
    },
}

/// `[IP...] [CONTAINER] [-h FQDN]` (weave's `-h`, so help is `--help` only).
#[derive(Debug, Args, Clone)]
pub struct DnsNameArgs {
    /// The name (FQDN, or a single label that gets the DNS domain).
    #[arg(short = 'h', long = "fqdn")]
    pub fqdn: Option<String>,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// [IP...] [CONTAINER]
    #[arg(required = true, num_args = 1..)]
    pub args: Vec<String>,
}

#[derive(Debug, Args, Clone)]
pub struct LaunchArgs {
    /// Mesh password: peers without it are turned away and traffic is encrypted.
    /// Handed to the router through a pipe, never its argv or environment; prefer
    /// the environment variable to this flag. Without --trusted-subnets, a
    /// password turns the (plaintext) fast datapath off entirely
    /// [env: MESHNET_PASSWORD, WEAVE_PASSWORD].
    #[arg(long)]
    pub password: Option<String>,
    /// Peer name (MAC-style, e.g. 8a:3e:3e:3e:3e:3e); default: derived from this host's key.
    #[arg(long)]
    pub name: Option<String>,
    /// Nickname shown next to the peer name; default: the hostname.
    #[arg(long)]
    pub nickname: Option<String>,
    /// Address to accept peer connections on.
    #[arg(long, default_value = "0.0.0.0")]
    pub host: IpAddr,
    /// TCP port for peer connections (UDP sleeve uses the same number)
    /// [env: MESHNET_PORT, WEAVE_PORT].
    #[arg(long, default_value_t = meshnet_router::config::DEFAULT_PORT)]
    pub port: u16,
    /// Most connections this router keeps (0 = unlimited).
    #[arg(long, default_value_t = meshnet_router::config::DEFAULT_CONN_LIMIT)]
    pub conn_limit: usize,
    /// Do not connect to peers of peers; only to the peers given.
    #[arg(long)]
    pub no_discovery: bool,
    /// Only peers whose key is listed in this file may connect (one `meshnet-x25519 KEY
    /// [comment]` line per key, as `meshnet identity` prints; `#` comments). Re-read on
    /// SIGHUP or `meshnet reload`.
    #[arg(long, env = "MESHNET_AUTHORIZED_KEYS", value_name = "FILE")]
    pub authorized_keys: Option<std::path::PathBuf>,
    /// Subnets (comma-separated CIDRs) whose peers are trusted with unencrypted fast datapath
    /// (when they trust us too); VXLAN is let in only from connected peers allowed on it.
    #[arg(long, value_delimiter = ',')]
    pub trusted_subnets: Vec<String>,
    /// Read-only status and metrics address ("" disables it)
    /// [env: MESHNET_STATUS_ADDR, WEAVE_STATUS_ADDR].
    #[arg(long, default_value = "127.0.0.1:6782")]
    pub status_addr: String,
    /// MTU of the overlay: the bridge and every container interface
    /// [env: MESHNET_MTU, WEAVE_MTU].
    #[arg(long, default_value_t = meshnet_router::datapath::DEFAULT_MTU)]
    pub mtu: u32,
    /// Do not use the kernel fast datapath (VXLAN); carry everything over the sleeve
    /// [env: MESHNET_NO_FASTDP, WEAVE_NO_FASTDP].
    #[arg(long)]
    pub no_fastdp: bool,
    /// Rotate sleeve keys after this many seconds (1..=120, the default): a test hook, hidden
    /// from --help.
    #[arg(long, hide = true, value_name = "SECS")]
    pub sleeve_rekey_interval: Option<u64>,
    /// IP allocation range for containers ("" disables IPAM)
    /// [env: MESHNET_IPALLOC_RANGE, IPALLOC_RANGE].
    #[arg(long, alias = "iprange", default_value = meshnet_router::config::DEFAULT_IPALLOC_RANGE)]
    pub ipalloc_range: String,
    /// Subnet `net:default` allocates from (default: the whole range).
    #[arg(long)]
    pub ipalloc_default_subnet: Option<String>,
    /// How the ring is first split: consensus[=N] (N defaults to the number of peers given + 1),
    /// seed=NAME,NAME,... (peer names, no consensus), or observer (never owns space until it asks).
    #[arg(long)]
    pub ipalloc_init: Option<String>,
    /// Take over the space of peers unreachable for this long (e.g. 24h). Off by default: a peer
    /// that is only partitioned away would lose its addresses' ownership.
    #[arg(long)]
    pub ipalloc_reclaim_after: Option<String>,
    /// Run attached to this terminal (for systemd and containers) instead of detaching.
    #[arg(long)]
    pub foreground: bool,
    /// Accepted for weave's command line: meshnet never restarts a router that died.
    #[arg(long)]
    pub no_restart: bool,
    /// Reconnect to the persisted peer list (what a launch without peers does); refused
    /// together with peers.
    #[arg(long, conflicts_with = "peers")]
    pub resume: bool,
    /// Run the Docker API proxy on $MESHNET_RUN_DIR/meshnet.sock (`eval $(meshnet env)`);
    /// --proxy=false turns it off.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true")]
    pub proxy: bool,
    /// The Docker engine for the proxy and plugin (default: $DOCKER_HOST, or
    /// unix:///var/run/docker.sock).
    #[arg(long)]
    pub docker_api: Option<String>,
    /// Proxy: leave containers without MESHNET_CIDR/WEAVE_CIDR off the mesh.
    #[arg(long)]
    pub no_default_ipalloc: bool,
    /// Proxy: `docker inspect` shows a container's mesh address and MAC in
    /// NetworkSettings.IPAddress, IPPrefixLen and MacAddress instead of Docker's bridge ones.
    #[arg(long)]
    pub rewrite_inspect: bool,
    /// Proxy: do not point created containers at meshnet's DNS (no --dns, --dns-search, nor
    /// hostname in the DNS domain).
    #[arg(long)]
    pub without_dns: bool,
    /// Proxy: no 224.0.0.0/4 route on the `ethwe` of attached containers.
    #[arg(long)]
    pub no_multicast_route: bool,
    /// Serve the Docker network/IPAM plugin `meshnet` and create the network `meshnet`
    /// (default: on in the root network namespace when Docker is reachable).
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    pub plugin: Option<bool>,
    /// Do not run the DNS server nor gossip names (weave-kube's setting).
    #[arg(long)]
    pub no_dns: bool,
    /// The DNS domain names are served in.
    #[arg(long, default_value = meshnet_router::dns::DEFAULT_DOMAIN)]
    pub dns_domain: String,
    /// Where the DNS server listens, IP[:PORT] (default: the docker0 bridge's address, port 53;
    /// without a docker0 bridge and without this flag, names are gossiped but not served).
    #[arg(long)]
    pub dns_listen_address: Option<String>,
    /// TTL of DNS answers, in seconds.
    #[arg(long, default_value_t = meshnet_router::dns::DEFAULT_TTL)]
    pub dns_ttl: u32,
    /// How long each upstream DNS server may take to answer (e.g. 5s).
    #[arg(long, default_value = "5s")]
    pub dns_fallback_timeout: String,
    /// Where the upstream DNS servers for names outside the domain come from (re-read when it
    /// changes; our own address is skipped).
    #[arg(long, default_value = meshnet_router::dns::DEFAULT_RESOLV_CONF)]
    pub resolv_conf: PathBuf,
    /// The router's log level: debug, info, warning (or warn) or error (weave's values);
    /// overrides RUST_LOG.
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Proxy: take a created container's hostname from this label when it has it (else
    /// from its name), before --hostname-match.
    #[arg(long, value_name = "KEY")]
    pub hostname_from_label: Option<String>,
    /// Proxy: a regular expression matched against the name a hostname is derived from;
    /// each match is replaced by --hostname-replacement.
    #[arg(long, value_name = "REGEX", default_value = meshnet_proxy::hosts::DEFAULT_HOSTNAME_MATCH)]
    pub hostname_match: String,
    /// Proxy: what each --hostname-match match becomes ($1, $name: its groups).
    #[arg(long, value_name = "TEXT", default_value = meshnet_proxy::hosts::DEFAULT_HOSTNAME_REPLACEMENT)]
    pub hostname_replacement: String,
    /// Proxy: leave a container's /etc/hosts as Docker wrote it (by default it names the
    /// container's mesh addresses, so `hostname -i` gives them).
    #[arg(long)]
    pub no_rewrite_hosts: bool,
    /// Proxy: where it listens, unix:///PATH or tcp://HOST:PORT; repeatable; the first is
    /// what `env` and `config` print (default: unix://$MESHNET_RUN_DIR/meshnet.sock).
    #[arg(short = 'H', value_name = "ADDR")]
    pub listen: Vec<String>,
    /// Weave Cloud's discovery token: accepted for weave's command line, but that service
    /// is gone and meshnet never calls it; a warning says so. Give peers instead.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Accepted for weave's command line: meshnet never looks for Docker's TLS settings.
    #[arg(long)]
    pub no_detect_tls: bool,
    /// Peers to connect to, as host[:port]. None: resume the persisted list.
    pub peers: Vec<String>,
}
