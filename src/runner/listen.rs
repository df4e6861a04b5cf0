//! Where the API listens on TCP (`--listen`), and when that is refused.

use crate::error::Error;

/// `--listen HOST:PORT` (a name is resolved; its first address is used), and whether it is loopback. A
/// non-loopback address without a token is refused: anyone on the network could read the runner.
pub fn listen_address(
    text: Option<&str>,
    has_token: bool,
) -> Result<Option<(std::net::SocketAddr, bool)>, Error> {
    use std::net::ToSocketAddrs;
    let Some(text) = text else {
        return Ok(None);
    };
    // `9090` or `:9090`: loopback, the default host.
    let port_only = text.strip_prefix(':').unwrap_or(text);
    let text = &match port_only.parse::<u16>() {
        Ok(port) => format!("127.0.0.1:{port}"),
        Err(_) => text.to_string(),
    };
    let addr = text
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| Error::Usage {
            message: format!("--listen `{text}` is not an address to listen on"),
            help: Some("give HOST:PORT, e.g. --listen 127.0.0.1:9090".into()),
        })?;
    let loopback = addr.ip().is_loopback();
    if !loopback && !has_token {
        return Err(Error::Usage {
            message: format!("--listen {addr} is not a loopback address, and FLOWRUN_TOKEN is not set"),
            help: Some(
                "set FLOWRUN_TOKEN (clients then send `Authorization: Bearer TOKEN` to change anything), or listen on 127.0.0.1"
                    .into(),
            ),
        });
    }
    Ok(Some((addr, loopback)))
}
