//! What an installer ships beside the binaries: `--version` names the git revision,
//! both binaries print completion scripts and man pages for every subcommand, and the
//! collector's Windows service commands tell a Linux user to use systemd instead.

use connwatch_tests::bin;
use std::process::Command;

fn run(binary: &str, args: &[&str]) -> String {
    let out = Command::new(bin(binary)).args(args).output().expect("run");
    assert!(
        out.status.success(),
        "{binary} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn version_names_the_git_revision() {
    let head = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    for binary in ["connwatch-aggregator", "connwatch-collector"] {
        let text = run(binary, &["--version"]);
        let want = format!(
            "{binary} {} ({})",
            env!("CARGO_PKG_VERSION"),
            head.as_deref().unwrap_or("unknown")
        );
        assert_eq!(text.trim(), want);
    }
}

#[test]
fn completions_and_man_pages_cover_the_subcommands() {
    for (binary, sub) in [
        ("connwatch-aggregator", "serve"),
        ("connwatch-collector", "probe"),
    ] {
        for shell in ["bash", "zsh", "fish", "powershell"] {
            let text = run(binary, &["completions", shell]);
            assert!(
                text.contains(sub),
                "{binary} {shell} completion lacks {sub}"
            );
        }
        let page = run(binary, &["man"]);
        assert!(page.starts_with(".ie") || page.contains(".TH"), "{page}");
        assert!(page.contains(sub));
        let dir = tempfile::tempdir().expect("tempdir");
        let listed = run(binary, &["man", "--dir", &dir.path().display().to_string()]);
        let page = dir.path().join(format!("{binary}-{sub}.1"));
        assert!(page.is_file(), "no {}: {listed}", page.display());
        assert!(listed.contains(&format!("{binary}.1")));
    }
}

#[test]
fn the_service_commands_point_linux_users_at_systemd() {
    for args in [&["service", "install"][..], &["service", "start"][..]] {
        let out = Command::new(bin("connwatch-collector"))
            .args(args)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(3));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("deploy/linux/connwatch-collector.service"),
            "{err}"
        );
    }
}
