//! kiln's binary: flag parsing, logging and exit codes. Everything else is in the libraries.
//!
//! Invoked under the name `executor` (e.g. `/kaniko/executor` in the CI image), it behaves as
//! Kaniko's executor: the arguments are `kiln build`'s. Invoked as `warmer` (Kaniko's
//! `/kaniko/warmer`), it is `kiln warm`, which takes Kaniko's warmer flags.

mod flags;
mod render;
mod run;
mod userns;

use clap::Parser;
use std::ffi::OsString;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = executor_args(std::env::args_os().collect());
    let mut cli = flags::Cli::parse_from(args.clone());
    if let flags::Command::Build(b) = &mut cli.command {
        b.take_positional_context();
    }
    if let flags::Command::Build(b) = &cli.command {
        userns::reexec_if_unprivileged(&args[1..]);
        // From here on SIGINT/SIGTERM/SIGHUP are handled by one thread that removes this
        // build's directories (which may hold secrets for a running RUN) before exiting.
        run::cleanup_on_signals(&run::state_dir_of(b));
    }
    // The error that ends the run is printed in the log's format (a JSON line with
    // --log-format=json, as every other line then is).
    let format = cli
        .command
        .log_flags()
        .map(|l| run::log_format(l).unwrap_or(render::Format::Text));
    match run::run(cli) {
        Ok(code) => code,
        Err(e) => {
            let code = run::exit_code(&e);
            let format = format.unwrap_or(render::Format::Text);
            eprintln!("{}", render::error_line(format, &error_chain(&e), code));
            ExitCode::from(code)
        }
    }
}

/// The error and its causes on one line, skipping a cause whose text the message already
/// includes (most of kiln's errors embed their source's text).
fn error_chain(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !msg.contains(&s) {
            msg.push_str(": ");
            msg.push_str(&s);
        }
        cur = c.source();
    }
    msg
}

/// Kaniko compatibility: `executor [flags]` means `kiln build [flags]`, and `executor version`
/// means `kiln version`; `warmer [flags]` means `kiln warm [flags]` (Kaniko's warmer image
/// runs `/kaniko/warmer --cache-dir … --image …`).
fn executor_args(mut args: Vec<OsString>) -> Vec<OsString> {
    let invoked_as = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if invoked_as == "warmer" {
        args.insert(1, OsString::from("warm"));
    }
    if invoked_as == "executor" {
        let first = args.get(1).map(|a| a.to_string_lossy().into_owned());
        if first.as_deref() != Some("version") {
            // Kaniko's semantics where they differ from BuildKit's (a later --compat wins).
            args.splice(
                1..1,
                [OsString::from("build"), OsString::from("--compat=kaniko")],
            );
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn error_chain_skips_repeated_causes() {
        let io = std::io::Error::other("disk full");
        let e = anyhow::Error::new(io).context("writing x: disk full");
        assert_eq!(error_chain(&e), "writing x: disk full");
        let e = anyhow::Error::new(std::io::Error::other("boom")).context("writing y");
        assert_eq!(error_chain(&e), "writing y: boom");
    }

    #[test]
    fn executor_name_means_build() {
        assert_eq!(
            executor_args(strs(&["/kaniko/executor", "-d", "x"])),
            strs(&["/kaniko/executor", "build", "--compat=kaniko", "-d", "x"])
        );
        assert_eq!(
            executor_args(strs(&["/kaniko/executor", "version"])),
            strs(&["/kaniko/executor", "version"])
        );
        assert_eq!(
            executor_args(strs(&["kiln", "build"])),
            strs(&["kiln", "build"])
        );
        assert_eq!(
            executor_args(strs(&["/kaniko/warmer", "-c", "/cache", "-i", "x"])),
            strs(&["/kaniko/warmer", "warm", "-c", "/cache", "-i", "x"])
        );
        assert_eq!(executor_args(strs(&["warmer"])), strs(&["warmer", "warm"]));
    }

    #[test]
    fn go_style_booleans_parse() {
        let cli = flags::Cli::try_parse_from(strs(&[
            "kiln",
            "build",
            "--cache=true",
            "--no-push",
            "--cache-run-layers=false",
            "-d",
            "a",
            "--destination=b",
        ]))
        .unwrap();
        let flags::Command::Build(b) = cli.command else {
            panic!("not build")
        };
        assert!(b.cache && b.no_push && !b.cache_run_layers);
        assert_eq!(b.destinations, vec!["a", "b"]);
        let cli = flags::Cli::try_parse_from(strs(&[
            "kiln",
            "build",
            "--cache=1",
            "--no-push=True",
            "--reproducible=F",
        ]))
        .unwrap();
        let flags::Command::Build(b) = cli.command else {
            panic!("not build")
        };
        assert!(b.cache && b.no_push && !b.reproducible);
        assert!(flags::Cli::try_parse_from(strs(&["kiln", "build", "--cache=yes"])).is_err());
    }
}
