//! `meshnet env` and `meshnet config`: point the Docker CLI at
//! the proxy with `eval $(meshnet env)`, and back with `eval $(meshnet env
//! --restore)`. The text printed on stdout is shell, so anything else goes
//! to stderr.

use std::path::Path;
use std::process::ExitCode;

use crate::args::EnvArgs;

/// The proxy's address as Docker clients write it.
pub fn proxy_url(run_dir: &Path) -> String {
    format!(
        "unix://{}",
        run_dir.join(meshnet_proxy::SOCKET_FILE).display()
    )
}

/// The shell line `meshnet env` prints, given the current `DOCKER_HOST`.
/// Weave leaves out `ORIG_DOCKER_HOST` when the client already points at the
/// proxy, so running it twice does not lose the original.
pub fn env_line(proxy: &str, docker_host: Option<&str>) -> String {
    let previous = docker_host.unwrap_or("");
    if previous == proxy {
        format!("export DOCKER_HOST={proxy}")
    } else {
        format!(
            "export DOCKER_HOST={proxy} ORIG_DOCKER_HOST={}",
            shell_quote(previous)
        )
    }
}

/// The shell line `meshnet env --restore` prints, or `None` when nothing
/// was saved.
pub fn restore_line(orig: Option<&str>) -> Option<String> {
    orig.map(|o| format!("export DOCKER_HOST={}", shell_quote(o)))
}

/// Quotes a value for `eval` when it needs it.
fn shell_quote(s: &str) -> String {
    let plain = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/:._-@,+=".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The proxy's address for clients: the first the router reports (its
/// `-H` addresses), else the default socket.
fn proxy_addr(env: &EnvArgs) -> String {
    crate::client::call(env.api(), http::Method::GET, "/report", &[])
        .ok()
        .and_then(|a| serde_json::from_str::<serde_json::Value>(&a.body).ok())
        .and_then(|r| r["Proxy"]["Addresses"][0].as_str().map(str::to_string))
        .unwrap_or_else(|| proxy_url(&env.run_dir))
}

/// Whether something answers at the proxy address `addr`.
fn proxy_running(addr: &str) -> bool {
    match addr.parse::<meshnet_proxy::DockerAddr>() {
        Ok(meshnet_proxy::DockerAddr::Unix(p)) => {
            std::os::unix::net::UnixStream::connect(p).is_ok()
        }
        Ok(meshnet_proxy::DockerAddr::Tcp(hp)) => std::net::TcpStream::connect(hp.as_str()).is_ok(),
        Err(_) => false,
    }
}

fn not_running(proxy: &str) -> ExitCode {
    eprintln!(
        "meshnet: the Docker proxy is not running (nothing answers at {proxy}): launch the router with `meshnet launch` (the proxy is on unless --proxy=false), or set MESHNET_RUN_DIR to its run dir"
    );
    ExitCode::FAILURE
}

/// `meshnet env [--restore]`.
pub fn env(env: &EnvArgs, restore: bool) -> ExitCode {
    if restore {
        return match restore_line(std::env::var("ORIG_DOCKER_HOST").ok().as_deref()) {
            Some(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            None => {
                eprintln!(
                    "Nothing to restore. This is most likely because there was no preceding invocation of 'eval $(meshnet env)' in this shell."
                );
                ExitCode::FAILURE
            }
        };
    }
    let proxy = proxy_addr(env);
    if !proxy_running(&proxy) {
        return not_running(&proxy);
    }
    let docker_host = std::env::var("DOCKER_HOST").ok();
    println!("{}", env_line(&proxy, docker_host.as_deref()));
    ExitCode::SUCCESS
}

/// `meshnet config`: the flag for `docker $(meshnet config) ps`.
pub fn config(env: &EnvArgs) -> ExitCode {
    let proxy = proxy_addr(env);
    if !proxy_running(&proxy) {
        return not_running(&proxy);
    }
    println!("-H={proxy}");
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_lines_follow_weave() {
        let p = proxy_url(Path::new("/run/meshnet"));
        assert_eq!(p, "unix:///run/meshnet/meshnet.sock");
        assert_eq!(
            env_line(&p, None),
            "export DOCKER_HOST=unix:///run/meshnet/meshnet.sock ORIG_DOCKER_HOST="
        );
        assert_eq!(
            env_line(&p, Some("tcp://10.0.0.1:2375")),
            "export DOCKER_HOST=unix:///run/meshnet/meshnet.sock ORIG_DOCKER_HOST=tcp://10.0.0.1:2375"
        );
        // Already pointing at the proxy: the saved original is kept.
        assert_eq!(
            env_line(&p, Some(&p)),
            "export DOCKER_HOST=unix:///run/meshnet/meshnet.sock"
        );
        assert_eq!(restore_line(None), None);
        assert_eq!(
            restore_line(Some("")).as_deref(),
            Some("export DOCKER_HOST=")
        );
        assert_eq!(
            restore_line(Some("unix:///var/run/docker.sock")).as_deref(),
            Some("export DOCKER_HOST=unix:///var/run/docker.sock")
        );
        assert_eq!(shell_quote("a b'c"), r"'a b'\''c'");
    }
}
