//! A backend's `address` as written: `IP:port`, or `host:port` to be resolved by the I/O pass.

use std::net::SocketAddr;

/// What an address says, before any lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Ip(SocketAddr),
    /// `host:port`, to be resolved (once, at load).
    Name,
}

/// Reads an address as written; `Err` says what is wrong with it.
pub fn parse(address: &str) -> Result<Address, String> {
    if let Ok(addr) = address.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(format!("{address:?}: port 0 is not a backend port"));
        }
        return Ok(Address::Ip(addr));
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(format!(
            "{address:?} is not host:port (the port is missing)"
        ));
    };
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err(format!("{address:?}: {port:?} is not a port number")),
        Ok(_) => {}
    }
    if host.is_empty() || host.contains(['/', ' ']) {
        return Err(format!("{address:?} is not host:port"));
    }
    Ok(Address::Name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_as_written() {
        let ip = |s: &str| Ok(Address::Ip(s.parse().unwrap()));
        let cases: &[(&str, Result<Address, &str>)] = &[
            (
                "127.0.0.1:8080",
                Ok(Address::Ip("127.0.0.1:8080".parse().unwrap())),
            ),
            ("[::1]:443", Ok(Address::Ip("[::1]:443".parse().unwrap()))),
            ("app.internal:8080", Ok(Address::Name)),
            ("127.0.0.1:0", Err("port 0 is not a backend port")),
            ("app.internal", Err("the port is missing")),
            ("app.internal:http", Err("is not a port number")),
            ("app.internal:0", Err("is not a port number")),
            ("app.internal:70000", Err("is not a port number")),
            (":80", Err("is not host:port")),
            ("http://app:80", Err("is not host:port")),
        ];
        for (written, want) in cases {
            match (parse(written), want) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{written}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{written}: {got}"),
                (got, want) => panic!("{written}: {got:?}, expected {want:?}"),
            }
        }
        assert_eq!(parse("10.0.0.1:80"), ip("10.0.0.1:80"));
    }
}
