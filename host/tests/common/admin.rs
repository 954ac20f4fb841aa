//! Talking to a running host's admin endpoint.

use super::Host;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// The admin address the host logged at start-up.
pub fn admin_address(host: &Host) -> String {
    let started = Instant::now();
    loop {
        let log = host.log();
        if let Some(rest) = log.split("admin endpoint listening").nth(1)
            && let Some(addr) = rest.split("address=").nth(1)
        {
            return addr.split_whitespace().next().unwrap().to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no admin address in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A plain HTTP GET: (status, body).
pub fn get(address: &str, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(address).expect("admin endpoint reachable");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of the `/metrics` sample `series` (name and labels as written), if present.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}
