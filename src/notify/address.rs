//! Which webhook addresses may be called: `https://` URLs whose host is on the public internet.
//! Private, loopback, link-local (cloud metadata), shared and multicast addresses are refused —
//! as IP literals when a URL is registered or redirected to, and as DNS answers when a delivery
//! connects ([`PublicResolver`]) — unless `MEALKITZ_WEBHOOK_ALLOW_PRIVATE` is set.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;

/// Longest webhook URL accepted.
pub const WEBHOOK_URL_MAX_BYTES: usize = 2_048;

/// Why a webhook URL was refused; the message is shown to the merchant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefusal {
    #[error("is not a valid absolute URL")]
    Malformed,
    #[error("must use https://")]
    NotHttps,
    #[error("must not carry a user name or password")]
    Credentials,
    #[error(
        "points to a private, loopback or link-local address ({0}); webhooks go to the public internet"
    )]
    PrivateAddress(String),
}

/// Checks a URL a merchant registers (or a redirect leads to). `allow_private` lets in plain
/// `http://` and private addresses (tests, closed networks).
pub fn check_webhook_url(raw: &str, allow_private: bool) -> Result<Url, UrlRefusal> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > WEBHOOK_URL_MAX_BYTES {
        return Err(UrlRefusal::Malformed);
    }
    let url = Url::parse(raw).map_err(|_| UrlRefusal::Malformed)?;
    check_parsed(&url, allow_private)?;
    Ok(url)
}

/// [`check_webhook_url`] on a parsed URL.
pub fn check_parsed(url: &Url, allow_private: bool) -> Result<(), UrlRefusal> {
    match url.scheme() {
        "https" => {}
        "http" if allow_private => {}
        "http" => return Err(UrlRefusal::NotHttps),
        _ => return Err(UrlRefusal::Malformed),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlRefusal::Credentials);
    }
    let host = url.host().ok_or(UrlRefusal::Malformed)?;
    if allow_private {
        return Ok(());
    }
    let ip = match host {
        url::Host::Ipv4(ip) => IpAddr::V4(ip),
        url::Host::Ipv6(ip) => IpAddr::V6(ip),
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name == "localhost"
                || name.ends_with(".localhost")
                || name.ends_with(".internal")
                || name.ends_with(".local")
                || !name.contains('.')
            {
                return Err(UrlRefusal::PrivateAddress(name));
            }
            return Ok(());
        }
    };
    if is_public(ip) {
        Ok(())
    } else {
        Err(UrlRefusal::PrivateAddress(ip.to_string()))
    }
}

/// Whether an address is on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => {
            if let Some(v4) = ip.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let first = ip.segments()[0];
            !(ip.is_loopback()
                || ip.is_unspecified()
                || ip.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (first & 0xffc0) == 0xfec0 // site-local fec0::/10
                || ip.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] && !is_public_v4(embedded_v4(ip)) // NAT64
                || (first == 0x2001 && ip.segments()[1] == 0x0db8)) // documentation 2001:db8::/32
        }
    }
}

fn embedded_v4(ip: Ipv6Addr) -> Ipv4Addr {
    let s = ip.segments();
    Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8)
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, _, _] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space 100.64/10
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240)
}

/// A DNS resolver for webhook deliveries that answers only public addresses: a name that
/// resolves to a private one fails to connect, whatever the URL said.
#[derive(Debug, Clone, Copy)]
pub struct PublicResolver {
    pub allow_private: bool,
}

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|addr| allow_private || is_public(addr.ip()))
                .collect();
            if allowed.is_empty() {
                let refusal =
                    UrlRefusal::PrivateAddress(format!("{host} resolves to no public address"));
                return Err(Box::new(refusal) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_https_urls_pass_and_private_or_plain_ones_are_refused() {
        assert!(check_webhook_url("https://pos.example.com/hooks/mealkitz", false).is_ok());
        assert!(check_webhook_url("https://93.184.216.34/hook", false).is_ok());
        for (url, refusal) in [
            ("http://pos.example.com/hook", UrlRefusal::NotHttps),
            ("ftp://pos.example.com/hook", UrlRefusal::Malformed),
            ("not a url", UrlRefusal::Malformed),
            ("https://user:pw@pos.example.com/", UrlRefusal::Credentials),
        ] {
            assert_eq!(check_webhook_url(url, false).unwrap_err(), refusal, "{url}");
        }
        for private in [
            "https://127.0.0.1/hook",
            "https://10.1.2.3/hook",
            "https://172.20.0.1/hook",
            "https://192.168.1.10/hook",
            "https://169.254.169.254/latest/meta-data",
            "https://100.64.0.1/",
            "https://0.0.0.0/",
            "https://[::1]/hook",
            "https://[fd00::1]/hook",
            "https://[fe80::1]/hook",
            "https://[::ffff:10.0.0.1]/hook",
            "https://localhost/hook",
            "https://metadata.google.internal/",
            "https://intranet/hook",
        ] {
            assert!(
                matches!(
                    check_webhook_url(private, false),
                    Err(UrlRefusal::PrivateAddress(_))
                ),
                "{private}"
            );
        }
        assert!(check_webhook_url("http://127.0.0.1:9000/hook", true).is_ok());
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_that_lead_to_private_addresses() {
        use reqwest::dns::Resolve;
        let strict = PublicResolver {
            allow_private: false,
        };
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        assert!(strict.resolve(name).await.is_err());
        let open = PublicResolver {
            allow_private: true,
        };
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        assert!(open.resolve(name).await.unwrap().next().is_some());
    }
}
