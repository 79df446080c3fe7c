//! The address arguments weave users write — `attach ADDR... C`, `expose
//! ADDR...`, `MESHNET_CIDR`/`WEAVE_CIDR` — and how each maps onto the
//! router's IPAM API. One definition for the CLI and
//! the Docker proxy.

use std::fmt;
use std::str::FromStr;

use axum::http::Method;
use ipnet::Ipv4Net;

/// One address argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrSpec {
    /// `net:default`: any free address in IPAM's default subnet.
    Default,
    /// `net:CIDR`: any free address in that subnet.
    Net(Ipv4Net),
    /// `CIDR` or `ip:CIDR`: exactly this address (claimed in IPAM).
    Ip(Ipv4Net),
}

/// An address argument that does not parse; the message says what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadAddr {
    #[error(
        "invalid address {0:?}: use CIDR notation such as 10.2.1.1/24, net:default or net:10.2.0.0/16"
    )]
    Syntax(String),
    #[error("invalid subnet {given:?}: host bits are set; did you mean net:{network}?")]
    HostBits { given: String, network: Ipv4Net },
}

impl FromStr for AddrSpec {
    type Err = BadAddr;

    fn from_str(s: &str) -> Result<AddrSpec, BadAddr> {
        let cidr = |c: &str| c.parse::<Ipv4Net>().map_err(|_| BadAddr::Syntax(s.into()));
        if s == "net:default" {
            return Ok(AddrSpec::Default);
        }
        if let Some(net) = s.strip_prefix("net:") {
            let n = cidr(net)?;
            // As weave's IPAM: a subnet with host bits set is refused, not guessed.
            if n.trunc() != n {
                return Err(BadAddr::HostBits {
                    given: s.into(),
                    network: n.trunc(),
                });
            }
            return Ok(AddrSpec::Net(n));
        }
        Ok(AddrSpec::Ip(cidr(s.strip_prefix("ip:").unwrap_or(s))?))
    }
}

impl fmt::Display for AddrSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrSpec::Default => f.write_str("net:default"),
            AddrSpec::Net(n) => write!(f, "net:{n}"),
            AddrSpec::Ip(c) => write!(f, "{c}"),
        }
    }
}

/// What IPAM's answer to [`AddrSpec::request`] means.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamAnswerError {
    /// 404: the router runs without IPAM (`--ipalloc-range ""`).
    #[error("IP address allocation is disabled (router launched without --ipalloc-range)")]
    Disabled,
    /// IPAM refused; its body says why.
    #[error("IPAM refused {spec}: {body}")]
    Refused { spec: String, body: String },
    /// A success whose body is not an address.
    #[error("the router answered {0:?} instead of an address")]
    NotAnAddress(String),
}

impl AddrSpec {
    /// The IPAM request this argument stands for: method and path (with
    /// weave's `check-alive=true` when the ident is a live container whose
    /// addresses IPAM releases when it dies).
    pub fn request(&self, ident: &str, check_alive: bool) -> (Method, String) {
        let query = if check_alive { "?check-alive=true" } else { "" };
        match self {
            AddrSpec::Default => (Method::POST, format!("/ip/{ident}{query}")),
            AddrSpec::Net(n) => (
                Method::POST,
                format!("/ip/{ident}/{}/{}{query}", n.addr(), n.prefix_len()),
            ),
            AddrSpec::Ip(c) => (
                Method::PUT,
                format!("/ip/{ident}/{}/{}{query}", c.addr(), c.prefix_len()),
            ),
        }
    }

    /// Interprets IPAM's answer: the address, and whether IPAM gave it out
    /// (so it must be handed back if what it was for fails).
    pub fn answer(&self, status: u16, body: &str) -> Result<(Ipv4Net, bool), IpamAnswerError> {
        let ok = (200..300).contains(&status);
        match (self, status) {
            // An explicit address with IPAM off (404) is the user's business.
            (AddrSpec::Ip(c), s) if ok || s == 404 => Ok((*c, false)),
            (AddrSpec::Default | AddrSpec::Net(_), 404) => Err(IpamAnswerError::Disabled),
            (AddrSpec::Default | AddrSpec::Net(_), _) if ok => body
                .trim()
                .parse()
                .map(|c| (c, true))
                .map_err(|_| IpamAnswerError::NotAnAddress(body.into())),
            _ => Err(self.refused(body)),
        }
    }

    fn refused(&self, body: &str) -> IpamAnswerError {
        IpamAnswerError::Refused {
            spec: self.to_string(),
            body: body.trim().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn arguments_parse_as_weave_does() {
        assert_eq!("net:default".parse(), Ok(AddrSpec::Default));
        assert_eq!(
            "net:10.2.0.0/16".parse(),
            Ok(AddrSpec::Net(net("10.2.0.0/16")))
        );
        assert_eq!(
            "ip:10.2.1.1/24".parse(),
            Ok(AddrSpec::Ip(net("10.2.1.1/24")))
        );
        assert_eq!(
            "10.0.0.11/24".parse(),
            Ok(AddrSpec::Ip(net("10.0.0.11/24")))
        );
    }

    #[test]
    fn bad_arguments_say_what_is_expected() {
        for bad in ["10.0.0.300/24", "net:bogus", "10.0.0.1", "ip:", "nonsense"] {
            let e = bad.parse::<AddrSpec>().unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("net:default"), "{bad}: {e}");
        }
        let e = "net:10.2.0.1/16"
            .parse::<AddrSpec>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("net:10.2.0.0/16"), "{e}");
    }

    #[test]
    fn requests_follow_weave() {
        let ident = "weave:expose";
        assert_eq!(
            AddrSpec::Default.request(ident, false),
            (Method::POST, "/ip/weave:expose".to_string())
        );
        assert_eq!(
            AddrSpec::Net(net("10.2.0.0/16")).request(ident, false),
            (Method::POST, "/ip/weave:expose/10.2.0.0/16".to_string())
        );
        assert_eq!(
            AddrSpec::Ip(net("10.32.0.9/12")).request(ident, false),
            (Method::PUT, "/ip/weave:expose/10.32.0.9/12".to_string())
        );
        assert_eq!(
            AddrSpec::Default.request("c1", true),
            (Method::POST, "/ip/c1?check-alive=true".to_string())
        );
    }

    #[test]
    fn answers() {
        let d = AddrSpec::Default;
        assert_eq!(
            d.answer(200, "10.32.0.1/12\n"),
            Ok((net("10.32.0.1/12"), true))
        );
        assert_eq!(d.answer(404, ""), Err(IpamAnswerError::Disabled));
        assert!(matches!(
            d.answer(200, "garbage"),
            Err(IpamAnswerError::NotAnAddress(_))
        ));
        assert_eq!(
            d.answer(400, "range full\n"),
            Err(IpamAnswerError::Refused {
                spec: "net:default".into(),
                body: "range full".into()
            })
        );
        let n = AddrSpec::Net(net("10.2.0.0/16"));
        assert_eq!(n.answer(404, ""), Err(IpamAnswerError::Disabled));
        assert_eq!(n.answer(201, "10.2.0.7/16"), Ok((net("10.2.0.7/16"), true)));
        let ip = AddrSpec::Ip(net("10.32.0.9/12"));
        assert_eq!(ip.answer(404, ""), Ok((net("10.32.0.9/12"), false)));
        assert_eq!(ip.answer(204, ""), Ok((net("10.32.0.9/12"), false)));
        let taken = ip.answer(409, "owned by c1").unwrap_err();
        assert_eq!(
            taken.to_string(),
            "IPAM refused 10.32.0.9/12: owned by c1",
            "names the address and IPAM's reason"
        );
    }

    #[test]
    fn arguments_print_as_given() {
        for s in ["net:default", "net:10.2.0.0/16", "10.2.1.1/24"] {
            let spec: AddrSpec = s.parse().unwrap();
            assert_eq!(spec.to_string(), s);
        }
        assert_eq!(
            "ip:10.2.1.1/24".parse::<AddrSpec>().unwrap().to_string(),
            "10.2.1.1/24"
        );
    }
}
