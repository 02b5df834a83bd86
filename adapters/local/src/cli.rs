//! The command line: `serve`, `check`, `demo`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use portcullis_core::key_upkeep::{self, CheckLine};
use portcullis_core::{policy_report, Policy};

use crate::context::SystemClock;
use crate::serve::App;
use crate::{demo, policy_file, serve};
use portcullis_host::options::Options;

/// Portcullis, an API gateway that decides every request from one policy file.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway. `secret_env` names in the policy are read from the environment.
    Serve {
        /// The policy file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Reload the policy whenever the file changes (also when it is replaced by a rename),
        /// not only on SIGHUP. A file that does not validate leaves the live policy in place.
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        host: Options,
        #[command(flatten)]
        counters: portcullis_counters::CounterOptions,
    },
    /// Validate a policy file: print every problem with its JSON pointer, or "ok".
    Check {
        /// The policy file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Also fetch every remote key set (`jwks_url`, `oidc_issuer`) once and report each.
        /// Without it, `check` touches no network.
        #[arg(long, conflicts_with = "format")]
        online: bool,
        /// `text` (lines for people) or `json` (one object: `valid`, `policy`, every error and
        /// warning with its JSON pointer) on stdout.
        #[arg(long, value_name = "FORMAT", value_parser = ["text", "json"])]
        format: Option<String>,
    },
    /// Run the gateway in front of a built-in echo origin on the example policy, and print a
    /// token and curl commands to try it.
    Demo {
        /// Address the gateway listens on.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8787")]
        listen: String,
        /// Address the echo origin listens on (port 0: any free port).
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:0")]
        origin_listen: String,
    },
}

/// Parse the command line and run it. Exit codes: 0 success, 1 failure (invalid policy, cannot
/// listen), 2 usage error (from clap).
pub fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Check {
            file,
            format: Some(format),
            ..
        } if format == "json" => check_json(&file),
        Command::Check { file, online, .. } => {
            portcullis_host::output::set_text(true);
            check(&file, online)
        }
        // An invalid policy must never serve, not even briefly: check it before binding.
        Command::Serve {
            config,
            watch,
            host,
            counters,
        } => {
            portcullis_host::output::set_text(host.text());
            match policy_file::load_text(&config, &policy_file::env_secret) {
                Ok((text, policy)) => run_async(serve::serve(
                    (config, text, policy),
                    watch,
                    (&host, &counters),
                )),
                Err(problems) if host.text() => {
                    eprintln!("{problems}");
                    ExitCode::FAILURE
                }
                Err(_) => {
                    serve::log_refusal(&config);
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo {
            listen,
            origin_listen,
        } => {
            portcullis_host::output::set_text(true);
            run_async(demo::run(&listen, &origin_listen))
        }
    }
}

/// The policy in `file`, or its problems printed to stderr and the failure exit code.
fn load(file: &Path) -> Result<Policy, ExitCode> {
    policy_file::load(file, &policy_file::env_secret).map_err(|problems| {
        eprintln!("{problems}");
        ExitCode::FAILURE
    })
}

fn check(file: &Path, online: bool) -> ExitCode {
    let policy = match load(file) {
        Ok(policy) => policy,
        Err(code) => return code,
    };
    let name = file.display().to_string();
    println!("{}", policy_report::ok_line(&name, &policy));
    if online {
        run_async(check_keys(name, policy))
    } else {
        ExitCode::SUCCESS
    }
}

/// `check --format json`: the core's report as one JSON object on stdout; exit 1 unless valid.
fn check_json(file: &Path) -> ExitCode {
    let name = file.display().to_string();
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("{name}: cannot read the file: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (valid, report) = policy_report::json_report(&name, &text, &policy_file::env_secret);
    println!("{report}");
    if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `check --online`: fetch every remote key set once, with the client `serve` would use, and
/// report each provider; fail if any key set could not be had.
async fn check_keys(file: String, policy: Policy) -> Result<(), String> {
    let app = App::new(policy)?;
    let fetched = app
        .gateway()
        .fetch_every_key_set(app.fetch(), &SystemClock)
        .await;
    for line in key_upkeep::check_lines(&file, &fetched) {
        match line {
            CheckLine::Output(text) => println!("{text}"),
            CheckLine::Diagnostic(text) => eprintln!("{text}"),
        }
    }
    key_upkeep::check_verdict(&fetched)
}

/// Run `task` on a multi-threaded runtime: one worker per core, so a CPU-heavy request (a large
/// schema, an RSA signature) never holds up the others.
fn run_async(task: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portcullis: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            portcullis_host::output::notice(true, "failed", &why, &[]);
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_takes_the_policy_file_and_the_hosts_options() {
        let cli = Cli::try_parse_from([
            "portcullis",
            "serve",
            "--config",
            "p.json",
            "--drain-s",
            "3",
            "--counter-store",
            "redis://127.0.0.1:6379/0",
            "--counter-store-on-error",
            "allow",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        match cli.command {
            Command::Serve {
                config,
                watch,
                host,
                counters,
            } => {
                assert_eq!(config, PathBuf::from("p.json"));
                assert!(!watch, "reloads on SIGHUP only, unless asked");
                assert_eq!(host.settings().drain, Duration::from_secs(3));
                assert_eq!(counters.counter_store, "redis://127.0.0.1:6379/0");
                assert_eq!(counters.counter_store_on_error, "allow");
                assert_eq!(counters.counter_store_timeout_ms, 50);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn counter_store_options_refuse_what_they_cannot_mean() {
        for bad in [
            ["--counter-store-on-error", "maybe"],
            ["--counter-store-timeout-ms", "0"],
            ["--counter-store-timeout-ms", "soon"],
        ] {
            let args = ["portcullis", "serve", "--config", "p.json", bad[0], bad[1]];
            assert!(Cli::try_parse_from(args).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn check_is_offline_unless_asked() {
        for (args, want) in [
            (&["portcullis", "check", "p.json"][..], false),
            (&["portcullis", "check", "--online", "p.json"][..], true),
        ] {
            match Cli::try_parse_from(args).map(|c| c.command) {
                Ok(Command::Check {
                    file,
                    online,
                    format,
                }) => {
                    assert_eq!(file, PathBuf::from("p.json"));
                    assert_eq!(online, want);
                    assert_eq!(format, None, "text unless asked");
                }
                other => panic!("parsed as {other:?}"),
            }
        }
        let json_online = [
            "portcullis",
            "check",
            "--online",
            "--format",
            "json",
            "p.json",
        ];
        assert!(
            Cli::try_parse_from(json_online).is_err(),
            "--online is text only"
        );
        assert!(Cli::try_parse_from(["portcullis", "check", "--format", "xml", "p.json"]).is_err());
    }
}
