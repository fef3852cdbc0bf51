//! The client's address behind a proxy the deployment trusts (an Ingress controller): from
//! `X-Forwarded-For`, so that auth's per-address limits and the audit log see each terminal, not
//! the controller. A request from any other peer keeps its own address, whatever it claims.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;
use tonic::transport::server::TcpConnectInfo;

/// The proxies whose `X-Forwarded-For` is believed; cheap to clone.
#[derive(Clone, Default)]
pub struct TrustedProxies(Arc<[IpNet]>);

impl TrustedProxies {
    pub fn new(nets: &[IpNet]) -> Self {
        Self(nets.into())
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// `--trusted-proxy`: a network (`10.0.0.0/8`) or one address.
pub fn parse_net(value: &str) -> Result<IpNet, String> {
    value
        .parse::<IpNet>()
        .or_else(|_| value.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{value:?} is not an address or a network (10.0.0.0/8, fd00::/8, 10.1.2.3)"))
}

/// Middleware: a request a trusted proxy forwarded is told the address it was forwarded for.
pub async fn client_address(State(trusted): State<TrustedProxies>, mut req: Request, next: Next) -> Response {
    if !trusted.0.is_empty()
        && let Some(info) = req.extensions().get::<TcpConnectInfo>()
        && let Some(peer) = info.remote_addr
    {
        let client = client_of(peer.ip(), req.headers(), &trusted);
        if client != peer.ip() {
            let local_addr = info.local_addr;
            let forwarded = TcpConnectInfo { local_addr, remote_addr: Some(SocketAddr::new(client, 0)) };
            req.extensions_mut().insert(forwarded);
        }
    }
    next.run(req).await
}

/// The client: walking `X-Forwarded-For` from the right (the hop nearest this server), the
/// first address no trusted proxy holds; the peer itself unless it is trusted. An entry that is no
/// address stops the walk (what lies beyond it cannot be believed).
fn client_of(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    if !trusted.trusts(peer) {
        return peer;
    }
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = hop.parse::<IpAddr>().ok().or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip())) else {
            break;
        };
        client = ip;
        if !trusted.trusts(ip) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", v.parse().unwrap());
        }
        headers
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_a_trusted_peer_is_believed_and_only_up_to_the_first_untrusted_hop() {
        let trusted = TrustedProxies::new(&[parse_net("10.0.0.0/8").unwrap(), parse_net("127.0.0.1").unwrap()]);
        // The controller forwards a terminal's request.
        assert_eq!(client_of(ip("10.1.2.3"), &headers(&["198.51.100.7"]), &trusted), ip("198.51.100.7"));
        // Through two proxies of ours: the terminal is the first hop outside them.
        assert_eq!(client_of(ip("127.0.0.1"), &headers(&["198.51.100.7, 10.9.9.9"]), &trusted), ip("198.51.100.7"));
        // What the terminal itself wrote on the left is not believed past its own address.
        assert_eq!(
            client_of(ip("10.1.2.3"), &headers(&["1.1.1.1", "198.51.100.7:4321"]), &trusted),
            ip("198.51.100.7")
        );
        // A stranger's claim is ignored.
        assert_eq!(client_of(ip("203.0.113.9"), &headers(&["198.51.100.7"]), &trusted), ip("203.0.113.9"));
        // Nothing forwarded, or garbage: the proxy's own address.
        assert_eq!(client_of(ip("10.1.2.3"), &headers(&[]), &trusted), ip("10.1.2.3"));
        assert_eq!(client_of(ip("10.1.2.3"), &headers(&["not-an-ip"]), &trusted), ip("10.1.2.3"));
        assert!(parse_net("10.0.0.0/33").is_err() && parse_net("pos.example.com").is_err());
    }
}
