use super::*;

fn parse(toml_text: &str) -> KafkaSecurity {
    toml::from_str(toml_text).unwrap()
}

fn check(toml_text: &str) -> Result<(), (String, String)> {
    parse(toml_text).check(&BTreeMap::new())
}

fn pem() -> tempfile::NamedTempFile {
    tempfile::NamedTempFile::new().unwrap()
}

#[test]
fn scram_over_tls_sets_librdkafka() {
    let s = parse(
        r#"
        sasl_mechanism = "scram-sha-512"
        username = "u"
        password = "p"
    "#,
    );
    assert_eq!(s.check(&BTreeMap::new()), Ok(()));
    let mut c = ClientConfig::new();
    s.apply(&mut c);
    assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
    assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
    assert_eq!(c.get("sasl.username"), Some("u"));
    assert_eq!(c.get("sasl.password"), Some("p"));
}

#[test]
fn mutual_tls_sets_the_files() {
    let (ca, cert, key) = (pem(), pem(), pem());
    let s = parse(&format!(
        "ca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}",
        ca.path(),
        cert.path(),
        key.path()
    ));
    assert_eq!(s.check(&BTreeMap::new()), Ok(()));
    let mut c = ClientConfig::new();
    s.apply(&mut c);
    assert_eq!(c.get("security.protocol"), Some("ssl"));
    assert_eq!(
        c.get("ssl.key.location"),
        Some(key.path().to_str().unwrap())
    );
}

#[test]
fn msk_iam_implies_oauthbearer_over_tls() {
    let s = parse(r#"auth = "aws_msk_iam""#);
    assert_eq!(s.check(&BTreeMap::new()), Ok(()));
    let mut c = ClientConfig::new();
    s.apply(&mut c);
    assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
    assert_eq!(c.get("sasl.mechanism"), Some("OAUTHBEARER"));
}

#[test]
fn unset_leaves_the_client_alone() {
    let mut c = ClientConfig::new();
    KafkaSecurity::default().apply(&mut c);
    assert_eq!(c.get("security.protocol"), None);
    let raw = BTreeMap::from([("security.protocol".to_owned(), "ssl".to_owned())]);
    assert_eq!(KafkaSecurity::default().check(&raw), Ok(()));
}

#[test]
fn errors_name_the_key_and_what_to_do() {
    let key = |t: &str| check(t).unwrap_err().0;
    assert_eq!(
        key(r#"ca_file = "/nonexistent/ca.pem""#),
        "security.ca_file"
    );
    let cert = pem();
    assert_eq!(
        key(&format!("cert_file = {:?}", cert.path())),
        "security.key_file"
    );
    assert_eq!(
        key(r#"sasl_mechanism = "scram-sha-256"
                username = "u""#),
        "security.password"
    );
    assert_eq!(
        key(r#"sasl_mechanism = "plain"
                password = "p""#),
        "security.username"
    );
    assert_eq!(key(r#"sasl_mechanism = "oauthbearer""#), "security.auth");
    assert_eq!(
        key(r#"protocol = "sasl_plaintext"
                auth = "aws_msk_iam""#),
        "security.protocol"
    );
    assert_eq!(
        key(r#"protocol = "tls"
                sasl_mechanism = "plain"
                username = "u"
                password = "p""#),
        "security.protocol"
    );
    assert_eq!(key(r#"protocol = "sasl_tls""#), "security.sasl_mechanism");
    assert_eq!(
        key(r#"protocol = "plaintext"
                ca_file = "/etc/hostname""#),
        "security.ca_file"
    );
    let message = check(
        r#"sasl_mechanism = "scram-sha-256"
           username = "u""#,
    )
    .unwrap_err()
    .1;
    assert!(message.contains("password"), "{message}");
}

#[test]
fn a_raw_option_may_not_contradict_the_table() {
    let s = parse(r#"auth = "aws_msk_iam""#);
    let raw = BTreeMap::from([("sasl.mechanism".to_owned(), "PLAIN".to_owned())]);
    let (key, message) = s.check(&raw).unwrap_err();
    assert_eq!(key, "options.\"sasl.mechanism\"");
    assert!(message.contains("security"), "{message}");
}

#[test]
fn unknown_keys_are_refused() {
    assert!(toml::from_str::<KafkaSecurity>(r#"pasword = "p""#).is_err());
    assert!(toml::from_str::<KafkaSecurity>(r#"protocol = "ssl""#).is_err());
}

#[test]
fn debug_hides_the_password() {
    let s = parse(
        r#"
        sasl_mechanism = "scram-sha-512"
        username = "sluice-user"
        password = "hunter2-from-the-environment"
    "#,
    );
    let shown = format!("{s:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(
        shown.contains("sluice-user") && shown.contains("<redacted>"),
        "{shown}"
    );
}
