//! Build script shared by both binaries: puts the git revision into
//! `CONNWATCH_GIT_REV` for `--version`: the variable's value when the build sets it
//! (the container build, whose context has no `.git`), else `git rev-parse`, else
//! "unknown" (a source tarball).

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=CONNWATCH_GIT_REV");
    let rev = std::env::var("CONNWATCH_GIT_REV")
        .ok()
        .filter(|r| !r.is_empty() && r != "unknown")
        .or_else(|| git(&["rev-parse", "--short", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=CONNWATCH_GIT_REV={rev}");
    // Rebuild when HEAD moves: HEAD itself changes on checkout, the branch's ref file
    // on commit. `--git-path` finds both in a worktree too. Only existing files are
    // named, since a missing one would make the script run on every build.
    let mut watch: Vec<PathBuf> = Vec::new();
    if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        watch.push(head.into());
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(path) = git(&["rev-parse", "--git-path", &branch])
    {
        watch.push(path.into());
    }
    if let Some(packed) = git(&["rev-parse", "--git-path", "packed-refs"]) {
        watch.push(packed.into());
    }
    for path in watch.into_iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
