//! The admin endpoint beyond loopback: a bearer token on every route but `/healthz` (and
//! `/readyz`'s details), TLS from PEM files, and `sluice validate` warning about an exposed
//! endpoint with neither.

mod common;

use common::admin::{admin_address, get};
use common::{Host, create_topic, kafka_source_toml, unique};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

const TOKEN: &str = "admin-token-5f1e9c";

/// A host reading an empty topic, dead letters to a file, with `admin` lines added.
fn config(admin: &str) -> String {
    let topic = unique("admin-raw");
    create_topic(&topic, 1);
    let mut text = kafka_source_toml(&topic, &unique("admin-group"), "127.0.0.1:0");
    text = text.replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:0\"\n{admin}"),
    );
    let out = std::env::temp_dir().join(format!("{}.ndjson", unique("admin-out")));
    text + &format!(
        "\n[sinks.out]\ntype = \"file\"\npath = {:?}\nroutes = [\"cleaned\", \"dlq\"]\n",
        out.display().to_string()
    )
}

/// A plain HTTP GET with an `Authorization` header: (status, body).
fn get_as(address: &str, path: &str, authorization: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: {authorization}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (response[9..12].parse().unwrap(), body.to_owned())
}

#[test]
fn with_a_token_every_route_but_liveness_asks_for_it() {
    let mut host = Host::start(&config(&format!("token = \"{TOKEN}\"")));
    let admin = admin_address(&host);
    let right = format!("Bearer {TOKEN}");
    for path in ["/metrics", "/tap?point=route:cleaned&limit=1"] {
        assert_eq!(get(&admin, path).0, 401, "{path} without a token");
        assert_eq!(get_as(&admin, path, "Bearer wrong").0, 401, "{path}");
        assert_eq!(get_as(&admin, path, TOKEN).0, 401, "{path}: not a bearer");
    }
    assert_eq!(get_as(&admin, "/metrics", &right).0, 200);
    assert_eq!(get(&admin, "/healthz"), (200, "ok\n".to_owned()));

    // Readiness answers a probe without the token, with its conditions only to the token.
    let (status, open) = get(&admin, "/readyz");
    assert!(status == 200 || status == 503, "{status}");
    let open: serde_json::Value = serde_json::from_str(&open).unwrap();
    assert!(
        open["ready"].is_boolean() && open.get("conditions").is_none(),
        "{open}"
    );
    let (_, full) = get_as(&admin, "/readyz", &right);
    let full: serde_json::Value = serde_json::from_str(&full).unwrap();
    assert!(full["conditions"].is_array(), "{full}");

    assert!(host.terminate().success(), "{}", host.log());
    assert!(!host.log().contains(TOKEN), "{}", host.log());
}

/// A CA and a certificate it signed for 127.0.0.1, made with the openssl command line.
fn certificates(dir: &Path) {
    let openssl = |args: &[String]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl command");
        assert!(out.status.success(), "{}", common::output_text(&out));
    };
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let args = |line: String| line.split(' ').map(str::to_owned).collect::<Vec<_>>();
    openssl(&args(format!(
        "req -x509 {ec} -keyout ca.key -out ca.pem -days 1 -subj /CN=sluice-test-CA"
    )));
    openssl(&args(format!(
        "req {ec} -keyout key.pem -out host.csr -subj /CN=127.0.0.1"
    )));
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&args(
        "x509 -req -in host.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile san.ext -out cert.pem".into(),
    ));
}

#[test]
fn over_tls_a_client_trusting_the_ca_gets_in_with_the_token() {
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let admin_lines = format!(
        "token = \"{TOKEN}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"",
        certs.path().join("cert.pem").display(),
        certs.path().join("key.pem").display()
    );
    let mut host = Host::start(&config(&admin_lines));
    let admin = admin_address(&host);

    let ca = std::fs::read(certs.path().join("ca.pem")).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = |path: &str, token: Option<&str>| {
        let mut call = client.get(format!("https://{admin}{path}"));
        if let Some(token) = token {
            call = call.bearer_auth(token);
        }
        rt.block_on(call.send()).map(|r| r.status().as_u16())
    };
    assert_eq!(status("/metrics", Some(TOKEN)).unwrap(), 200);
    assert_eq!(status("/metrics", None).unwrap(), 401);
    assert_eq!(status("/healthz", None).unwrap(), 200);

    // Plain HTTP gets no answer, and a client not trusting the CA does not connect.
    let mut plain = std::net::TcpStream::connect(&admin).unwrap();
    plain
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    write!(plain, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("ok"),
        "plain HTTP was served"
    );
    let untrusting = reqwest::Client::new().get(format!("https://{admin}/healthz"));
    assert!(rt.block_on(untrusting.send()).is_err());

    // `sluice top` reads it with --ca-file, and refuses the certificate without it.
    let top = |extra: &[&str]| {
        let url = format!("https://{admin}");
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["top", "--once", "--admin", &url, "--token", TOKEN])
            .args(extra)
            .env_remove("SLUICE_ADMIN_CA")
            .output()
            .unwrap()
    };
    let ca_path = certs.path().join("ca.pem");
    let trusted = top(&["--ca-file", ca_path.to_str().unwrap()]);
    assert!(
        trusted.status.success(),
        "{}",
        common::output_text(&trusted)
    );
    assert!(!top(&[]).status.success());

    assert!(host.terminate().success(), "{}", host.log());
}

#[test]
fn validate_warns_about_an_exposed_admin_endpoint_without_token_or_tls() {
    let dir = tempfile::tempdir().unwrap();
    let validate = |admin: &str| {
        let path = dir.path().join("sluice.toml");
        let text = config("").replace("listen = \"127.0.0.1:0\"", admin);
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["validate", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let text = common::output_text(&out);
        assert!(out.status.success(), "{text}");
        text
    };
    let exposed = validate("listen = \"0.0.0.0:9898\"");
    assert!(
        exposed
            .contains("warning: admin.listen = \"0.0.0.0:9898\" is reachable from other machines"),
        "{exposed}"
    );
    for guarded in [
        format!("listen = \"0.0.0.0:9898\"\ntoken = \"{TOKEN}\""),
        "listen = \"127.0.0.1:9898\"".to_owned(),
        "listen = \"[::1]:9898\"".to_owned(),
    ] {
        let text = validate(&guarded);
        assert!(!text.contains("warning"), "{guarded}: {text}");
        assert!(!text.contains(TOKEN), "{text}");
    }
}
