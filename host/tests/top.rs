//! `sluice top` against a running host, in a real terminal: tmux draws it, `capture-pane`
//! reads the screen back. tmux is part of the test environment (.ci/run installs it): when
//! it is missing these tests fail rather than pass without looking.

mod common;

use common::{Host, create_topic, kafka_config, plugin, produce, unique};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A tmux server of this test's own (`-L`), killed when dropped.
struct Tmux {
    socket: String,
    session: String,
}

impl Tmux {
    /// A 160×50 session running `command` in a shell.
    fn start(command: &str) -> Tmux {
        let version = Command::new("tmux").arg("-V").output();
        assert!(
            version.is_ok_and(|v| v.status.success()),
            "tmux is missing: these tests drive sluice top in it (apt-get install tmux; .ci/run installs it)"
        );
        let tmux = Tmux {
            socket: unique("sluice-top"),
            session: "top".into(),
        };
        let out = tmux.run(&[
            "new-session",
            "-d",
            "-x",
            "160",
            "-y",
            "50",
            "-s",
            &tmux.session,
            command,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("run tmux")
    }

    /// The pane's text.
    fn screen(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-t", &self.session]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Wait until `ready` holds for the screen; fail naming `what` with the last screen.
    fn wait_for(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no {what} on the screen within 60 s; it shows:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Whether the pane shows the alternate screen (a full-screen program is drawing).
    fn alternate_screen(&self) -> bool {
        let out = self.run(&[
            "display-message",
            "-p",
            "-t",
            &self.session,
            "#{alternate_on}",
        ]);
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// The words of the screen's row starting with `start`.
fn row<'a>(screen: &'a str, start: &str) -> Option<Vec<&'a str>> {
    (screen.lines())
        .find(|l| l.trim_start().starts_with(start))
        .map(|l| l.split_whitespace().collect())
}

/// A free loopback port, for a host that starts after `sluice top` looks for it.
fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[test]
fn top_waits_for_the_host_shows_stages_sinks_and_partitions_and_q_restores_the_terminal() {
    let (source, cleaned, dlq) = (unique("raw"), unique("cleaned"), unique("dlq"));
    create_topic(&source, 2);
    create_topic(&cleaned, 1);
    create_topic(&dlq, 1);
    let admin = free_address();

    // The host is not up yet: top says so, with what to try, and keeps looking.
    let tmux = Tmux::start(&format!(
        "{} top --admin {admin} --interval-ms 500; echo \"top exited $?\"; stty -a; sleep 120",
        env!("CARGO_BIN_EXE_sluice")
    ));
    let screen = tmux.wait_for("unreachable message", |s| s.contains("cannot reach"));
    assert!(screen.contains("--admin"), "{screen}");
    tmux.wait_for("second retry", |s| s.contains("(3 failed in a row)"));

    let config = kafka_config(
        &source,
        &cleaned,
        &dlq,
        &[("normalize", plugin("normalize"))],
    )
    .replace("listen = \"\"", &format!("listen = \"{admin}\""));
    let mut host = Host::start(&config);
    let lines: Vec<(Option<String>, Vec<u8>)> = (0..3000)
        .map(|n| {
            let line = format!(r#"{{"seq":{n},"service":"api","level":"info","msg":"line {n}"}}"#);
            (Some(format!("k{}", n % 7)), line.into_bytes())
        })
        .collect();
    produce(&source, &lines);

    // Every record committed: both partitions' committed offsets add up to 3000, lag 0.
    let screen = tmux.wait_for("partitions committed to the end", |s| {
        let committed: Option<i64> = (0..2)
            .map(|p| {
                let r = row(s, &format!("{source}/{p}"))?;
                (r.get(1) == Some(&"0")).then(|| r.get(2)?.parse::<i64>().ok())?
            })
            .sum();
        committed == Some(3000)
    });
    assert!(!screen.contains("cannot reach"), "{screen}");
    let stage = row(&screen, "normalize").expect("a normalize row");
    assert_eq!(
        stage.len(),
        9,
        "name, in/s, out/s, failed, foreign, p99 (2 words), memory (2 words): {stage:?}"
    );
    assert_eq!(stage[3], "0", "no failed calls: {screen}");
    assert!(row(&screen, "cleaned").is_some(), "{screen}");
    assert!(row(&screen, "dlq").is_some(), "{screen}");
    assert!(screen.contains("ready"), "{screen}");
    assert!(tmux.alternate_screen(), "top draws on the alternate screen");

    tmux.run(&["send-keys", "-t", &tmux.session, "q"]);
    // `stty -a` prints after top exits: the terminal's modes as top left them.
    let screen = tmux.wait_for("exit and the terminal's modes", |s| {
        s.contains("top exited") && s.contains("icanon")
    });
    assert!(screen.contains("top exited 0"), "{screen}");
    assert!(
        !tmux.alternate_screen(),
        "the alternate screen was left:\n{screen}"
    );
    // Raw mode undone: the line discipline echoes and reads lines again.
    let stty = screen.split_whitespace().collect::<Vec<_>>();
    assert!(
        stty.contains(&"icanon") && stty.contains(&"echo"),
        "{screen}"
    );
    assert!(
        !stty.contains(&"-icanon") && !stty.contains(&"-echo"),
        "{screen}"
    );
    assert!(host.terminate().success(), "{}", host.log());
}

#[test]
fn top_once_prints_one_frame_and_an_unreachable_host_is_an_error_with_what_to_try() {
    let (source, cleaned, dlq) = (unique("raw"), unique("cleaned"), unique("dlq"));
    create_topic(&source, 1);
    create_topic(&cleaned, 1);
    create_topic(&dlq, 1);
    let config = kafka_config(
        &source,
        &cleaned,
        &dlq,
        &[("normalize", plugin("normalize"))],
    )
    .replace("listen = \"\"", "listen = \"127.0.0.1:0\"");
    let mut host = Host::start(&config);
    let admin = common::admin::admin_address(&host);
    produce(&source, &[(None, br#"{"msg":"one"}"#.to_vec())]);

    let top = |admin: &str| {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["top", "--once", "--interval-ms", "200", "--admin", admin])
            .env_remove("SLUICE_ADMIN_TOKEN")
            .output()
            .unwrap()
    };
    let out = top(&admin);
    let frame = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for start in ["STAGE", "normalize", "SINK", "cleaned", "dlq", "PARTITION"] {
        assert!(row(&frame, start).is_some(), "no {start} row in\n{frame}");
    }

    let out = top(&free_address());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot reach the admin endpoint"),
        "{stderr}"
    );
    assert!(stderr.contains("--admin"), "{stderr}");
    assert!(host.terminate().success(), "{}", host.log());
}
