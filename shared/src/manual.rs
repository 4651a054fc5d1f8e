//! Shell completions and man pages, generated from a binary's own clap definition at
//! run time, so what ships with a binary always matches its flags.

use clap::Command;
use std::io::Write;
use std::path::Path;

pub use clap_complete::Shell;

/// The `--version` text: the crate version and the git revision it was built from.
#[macro_export]
macro_rules! version {
    () => {
        concat!(
            env!("CARGO_PKG_VERSION"),
            " (",
            env!("CONNWATCH_GIT_REV"),
            ")"
        )
    };
}

/// Writes the completion script for `shell` to `out`.
pub fn completions(mut command: Command, shell: clap_complete::Shell, out: &mut dyn Write) {
    let name = command.get_name().to_string();
    clap_complete::generate(shell, &mut command, name, out);
}

/// Writes the top-level man page to `out`.
pub fn man_page(command: Command, out: &mut dyn Write) -> std::io::Result<()> {
    clap_mangen::Man::new(command).render(out)
}

/// Writes one man page per command and subcommand (`name.1`, `name-sub.1`, ...) into
/// `dir`, creating it; returns the files written.
pub fn man_pages(command: Command, dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(command, dir)?;
    let mut written: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    written.sort();
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Command {
        Command::new("sample")
            .about("does things")
            .subcommand(Command::new("run").arg(clap::arg!(--config <FILE>)))
    }

    #[test]
    fn completions_name_the_subcommands() {
        let mut out = Vec::new();
        completions(sample(), clap_complete::Shell::Bash, &mut out);
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.contains("sample") && text.contains("run") && text.contains("--config"));
    }

    #[test]
    fn man_pages_cover_every_subcommand() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = man_pages(sample(), dir.path()).expect("write");
        let names: Vec<_> = files
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(String::from))
            .collect();
        assert_eq!(names, ["sample-run.1", "sample.1"]);
        let mut page = Vec::new();
        man_page(sample(), &mut page).expect("render");
        assert!(String::from_utf8_lossy(&page).contains(".TH sample"));
    }
}
