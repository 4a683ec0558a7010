//! `egret-agent`'s command line as a user meets it (unprivileged): the
//! version, help for every subcommand, suggestions for a misspelling, and
//! log events with timestamps in either format.

use std::process::{Command, Output};

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_egret-agent")).args(args).output().expect("run egret-agent")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn version_and_help_for_every_subcommand() {
    let v = agent(&["--version"]);
    assert!(v.status.success(), "{}", stderr(&v));
    assert_eq!(stdout(&v).trim(), format!("egret-agent {}", env!("CARGO_PKG_VERSION")));
    let help = agent(&["--help"]);
    assert!(help.status.success());
    for flag in ["--snapshot", "--kube", "--node", "--metrics", "--log-format", "--probe-interval", "--cni-socket"] {
        assert!(stdout(&help).contains(flag), "`{flag}` in\n{}", stdout(&help));
    }
    for (sub, flags) in [
        ("status", &["--bpffs", "--netns", "--json"][..]),
        ("maps", &["--bpffs", "--netns", "--json"]),
        ("uninstall", &["--bpffs", "--netns", "--cni-bin-dir", "--cni-conf-dir", "--log-format"]),
    ] {
        let h = agent(&[sub, "--help"]);
        assert!(h.status.success(), "{sub} --help: {}", stderr(&h));
        for flag in flags {
            assert!(stdout(&h).contains(flag), "{sub} --help lacks `{flag}`:\n{}", stdout(&h));
        }
        assert!(stdout(&help).contains(sub), "the top-level help lists `{sub}`");
    }
}

#[test]
fn usage_errors_exit_2_with_a_suggestion() {
    let o = agent(&["staus"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("'status'"), "{}", stderr(&o));
    let o = agent(&["--kube", "--node", "n", "--metrcs", "127.0.0.1:9963"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--metrics"), "{}", stderr(&o));
    let o = agent(&["status", "--netns"]);
    assert_eq!(o.status.code(), Some(2), "--netns needs a value");
}

#[test]
fn log_events_are_timestamped_text_or_json_lines() {
    // a namespace that does not exist: the agent's first log event, then exit 1
    let missing = format!("egret-no-such-netns-{}", std::process::id());
    let text = agent(&["--snapshot", "/nonexistent", "--node", "n", "--netns", &missing]);
    assert_eq!(text.status.code(), Some(1));
    let line = stderr(&text);
    let line = line.lines().find(|l| l.contains("ERROR")).unwrap_or_else(|| panic!("an ERROR line in {line}"));
    // 2026-12-07T21:08:57.123456Z ERROR ...: a UTC RFC 3339 timestamp first
    let stamp = line.split_whitespace().next().unwrap_or_default();
    assert!(stamp.len() >= 20 && stamp.as_bytes()[4] == b'-' && stamp.contains('T') && stamp.ends_with('Z'), "{line}");
    assert!(line.contains(&missing), "the event names the namespace: {line}");

    let json = agent(&["--snapshot", "/nonexistent", "--node", "n", "--netns", &missing, "--log-format", "json"]);
    assert_eq!(json.status.code(), Some(1));
    let err = stderr(&json);
    let event: serde_json::Value =
        serde_json::from_str(err.lines().next().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(event["level"], "ERROR", "{event}");
    assert!(event["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{event}");
    assert_eq!(event["fields"]["netns"], missing.as_str(), "{event}");
}
