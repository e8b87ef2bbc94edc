//! The command-line surface the integration suite (tests/*.py) relies on.
//! Runs the built binary; no broker is started here.

use std::process::Command;

fn sluice(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .expect("run sluice");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn assert_mentions(args: &[&str], words: &[&str]) {
    let (ok, text) = sluice(args);
    assert!(ok, "`sluice {}` failed:\n{text}", args.join(" "));
    for w in words {
        assert!(
            text.contains(w),
            "`sluice {}` does not mention {w}:\n{text}",
            args.join(" ")
        );
    }
}

#[test]
fn top_level_commands() {
    assert_mentions(
        &["--help"],
        &["start", "topic", "group", "produce", "consume"],
    );
}

#[test]
fn group_subcommands() {
    assert_mentions(
        &["group", "--help"],
        &[
            "list",
            "describe",
            "reset-offsets",
            "delete",
            "delete-offsets",
        ],
    );
    assert_mentions(
        &["group", "reset-offsets", "--help"],
        &[
            "--topic",
            "--partition",
            "--to-earliest",
            "--to-latest",
            "--to-offset",
            "--to-datetime",
            "--shift-by",
            "--execute",
            "--bootstrap",
        ],
    );
    assert_mentions(
        &["group", "delete-offsets", "--help"],
        &["--topic", "--partition"],
    );
}

#[test]
fn start_flags() {
    assert_mentions(
        &["start", "--help"],
        &["--listen", "--data-dir", "--smp", "--set"],
    );
}

#[test]
fn topic_subcommands() {
    assert_mentions(
        &["topic", "--help"],
        &[
            "create",
            "list",
            "describe",
            "delete",
            "add-partitions",
            "alter-config",
        ],
    );
    assert_mentions(
        &["topic", "create", "--help"],
        &["--partitions", "--config", "--bootstrap"],
    );
    assert_mentions(&["topic", "add-partitions", "--help"], &["--total"]);
    assert_mentions(&["topic", "alter-config", "--help"], &["--set"]);
}

#[test]
fn produce_consume_flags() {
    assert_mentions(
        &["produce", "--help"],
        &[
            "--partition",
            "--key-delimiter",
            "--acks",
            "--compression",
            "--bootstrap",
        ],
    );
    assert_mentions(
        &["consume", "--help"],
        &[
            "--partition",
            "--offset",
            "--count",
            "--print-key",
            "--key-delimiter",
            "--bootstrap",
        ],
    );
}

#[test]
fn unknown_command_fails() {
    let (ok, _) = sluice(&["no-such-command"]);
    assert!(!ok, "an unknown command must exit non-zero");
}

#[test]
fn log_verify_subcommand() {
    assert_mentions(&["log", "--help"], &["verify"]);
    assert_mentions(&["log", "verify", "--help"], &["DIR", "--quiet"]);
    let dir = std::env::temp_dir().join(format!("sluice-verify-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let (ok, text) = sluice(&["log", "verify", dir.to_str().expect("utf-8 path")]);
    std::fs::remove_dir_all(&dir).expect("rmdir");
    assert!(ok, "an empty dir is clean:\n{text}");
    assert!(text.contains("errors 0"), "{text}");
}

#[test]
fn bench_subcommands_and_flags() {
    assert_mentions(&["bench", "--help"], &["run", "compare", "sweep"]);
    assert_mentions(
        &["bench", "run", "--help"],
        &["--bootstrap", "--out", "--set", "--label"],
    );
    assert_mentions(&["bench", "compare", "--help"], &["--plot"]);
    assert_mentions(
        &["bench", "sweep", "--help"],
        &["--bootstrap", "--out", "--set", "--data-parent"],
    );
}
