//! `portcullis-spin-host`: a small TEST host that runs the HTTP component of a `spin.toml` the
//! way `spin up` (Spin 3.x) does, so that Portcullis's conformance suite can run its Spin adapter
//! on a machine without the Spin CLI. It is not a Spin replacement: it implements the part of
//! Spin the adapter uses (see README.md) and refuses manifests that need more.
//!
//! Usage mirrors `spin up`, so the same command line works with either:
//!
//! ```text
//! portcullis-spin-host up [-f spin.toml] [--listen 127.0.0.1:3000] [--key-value KEY=VALUE]...
//!                         [--variable NAME=VALUE]... [--state-dir DIR]
//! ```

/// `println!` that never panics: a closed stdout must not take the host down.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that never panics: a closed stderr must not take the host down.
macro_rules! warn {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod host;
mod kv;
mod manifest;
mod outbound;
mod server;
mod variables;

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};

const USAGE: &str = "\
usage: portcullis-spin-host up [OPTIONS]

A test host that runs a Spin HTTP component as `spin up` would (for Portcullis's tests).

options (the same as `spin up`'s):
  -f, --from PATH          spin.toml, or a directory holding it (default: ./spin.toml)
      --listen ADDR        address to listen on (default: 127.0.0.1:3000)
      --key-value K=V      set key K to V in the default key-value store before serving (repeatable)
      --variable N=V       set application variable N (repeatable; overrides SPIN_VARIABLE_N)
      --state-dir DIR      keep the default key-value store in DIR/sqlite_key_value.db
                           (default: .spin next to spin.toml; an empty value keeps it in memory)
  -h, --help               print this help

test-only commands (not Spin's), to change a stopped or running app's default store the way a
test needs (the file is Spin's own layout, so this works for `spin up --state-dir DIR` too):
  portcullis-spin-host kv-set --state-dir DIR KEY (VALUE | --value-file PATH)
  portcullis-spin-host kv-delete --state-dir DIR KEY

environment:
  SPIN_VARIABLE_<NAME>            value of application variable <name>
  PORTCULLIS_SPIN_HOST_TIMINGS=1  print one `spin-host-timing {json}` line per request on stderr";

/// Where the default key-value store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StateDir {
    /// `.spin` next to the manifest.
    Default,
    /// `--state-dir ""`: memory.
    Unset,
    /// `--state-dir DIR`.
    Provided(PathBuf),
}

#[derive(Debug)]
struct Options {
    from: Option<PathBuf>,
    listen: SocketAddr,
    key_values: Vec<(String, String)>,
    variables: BTreeMap<String, String>,
    state_dir: StateDir,
}

fn split_pair(flag: &str, value: &str) -> anyhow::Result<(String, String)> {
    let (k, v) = value
        .split_once('=')
        .ok_or_else(|| anyhow!("{flag} expects KEY=VALUE, got {value:?}"))?;
    if k.is_empty() {
        bail!("{flag} expects KEY=VALUE with a non-empty KEY");
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// Spin resolves names and prefers IPv4 (`localhost:3000` is 127.0.0.1:3000).
fn parse_listen(value: &str) -> anyhow::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = value
        .to_socket_addrs()
        .with_context(|| format!("--listen {value:?} is not HOST:PORT"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| anyhow!("--listen {value:?} resolves to no address"))
}

/// A test-only edit of a state directory's default store.
#[derive(Debug, PartialEq, Eq)]
enum KvEdit {
    Set {
        state_dir: PathBuf,
        key: String,
        value: Vec<u8>,
    },
    Delete {
        state_dir: PathBuf,
        key: String,
    },
}

fn parse_kv_edit(command: &str, args: Vec<String>) -> anyhow::Result<KvEdit> {
    let mut state_dir = None;
    let mut value_file = None;
    let mut positional = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--state-dir" => state_dir = args.next(),
            "--value-file" => value_file = args.next(),
            _ if arg.starts_with("--") => bail!("{command}: unknown option {arg:?}"),
            _ => positional.push(arg),
        }
    }
    let state_dir = PathBuf::from(
        state_dir
            .filter(|d| !d.is_empty())
            .ok_or_else(|| anyhow!("{command} needs --state-dir DIR"))?,
    );
    let mut positional = positional.into_iter();
    let key = positional
        .next()
        .ok_or_else(|| anyhow!("{command} needs a KEY"))?;
    let value = positional.next();
    if positional.next().is_some() {
        bail!("{command}: too many arguments");
    }
    match (command, value, value_file) {
        ("kv-delete", None, None) => Ok(KvEdit::Delete { state_dir, key }),
        ("kv-set", Some(v), None) => Ok(KvEdit::Set {
            state_dir,
            key,
            value: v.into_bytes(),
        }),
        ("kv-set", None, Some(path)) => Ok(KvEdit::Set {
            state_dir,
            key,
            value: std::fs::read(&path).with_context(|| format!("reading {path}"))?,
        }),
        _ => bail!("usage: kv-set --state-dir DIR KEY (VALUE | --value-file PATH), or kv-delete --state-dir DIR KEY"),
    }
}

fn apply_kv_edit(edit: KvEdit) -> anyhow::Result<()> {
    match edit {
        KvEdit::Set {
            state_dir,
            key,
            value,
        } => kv::open(Some(&state_dir))?
            .set(&key, &value)
            .map_err(|e| anyhow!("{e}")),
        KvEdit::Delete { state_dir, key } => kv::open(Some(&state_dir))?
            .delete(&key)
            .map_err(|e| anyhow!("{e}")),
    }
}

/// What the command line asks for.
#[derive(Debug)]
enum Command {
    Up(Options),
    Kv(KvEdit),
    Help,
}

fn parse_args(args: Vec<String>) -> anyhow::Result<Command> {
    let mut args = args.into_iter();
    match args.next().as_deref() {
        Some("up") => {}
        Some(c @ ("kv-set" | "kv-delete")) => {
            return parse_kv_edit(c, args.collect()).map(Command::Kv)
        }
        Some("-h" | "--help") | None => return Ok(Command::Help),
        Some(other) => bail!(
            "unknown command {other:?} (only `up` exists, and the test-only kv-set and kv-delete)"
        ),
    }
    let mut opts = Options {
        from: None,
        listen: "127.0.0.1:3000".parse().expect("literal address"),
        key_values: Vec::new(),
        variables: BTreeMap::new(),
        state_dir: StateDir::Default,
    };
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            return Ok(Command::Help);
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-f" | "--from" | "--file" => opts.from = Some(PathBuf::from(value()?)),
            "--listen" => opts.listen = parse_listen(&value()?)?,
            "--key-value" => opts.key_values.push(split_pair("--key-value", &value()?)?),
            "--variable" => {
                let (k, v) = split_pair("--variable", &value()?)?;
                opts.variables.insert(k, v);
            }
            "--state-dir" => {
                let v = value()?;
                opts.state_dir = if v.is_empty() {
                    StateDir::Unset
                } else {
                    StateDir::Provided(PathBuf::from(v))
                };
            }
            other => bail!(
                "unknown option {other:?} (this test host supports only the options in --help)"
            ),
        }
    }
    Ok(Command::Up(opts))
}

fn main() -> ExitCode {
    let args: Vec<String> = match std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect::<Result<_, _>>()
    {
        Ok(a) => a,
        Err(bad) => {
            warn!("portcullis-spin-host: argument {bad:?} is not UTF-8");
            return ExitCode::from(2);
        }
    };
    let opts = match parse_args(args) {
        Ok(Command::Up(opts)) => opts,
        Ok(Command::Kv(edit)) => {
            return match apply_kv_edit(edit) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    warn!("portcullis-spin-host: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Ok(Command::Help) => {
            say!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            warn!("portcullis-spin-host: {e:#}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            warn!("portcullis-spin-host: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(up(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            warn!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Load, prepare, listen, serve until SIGINT or SIGTERM.
async fn up(opts: Options) -> anyhow::Result<()> {
    let manifest_path = manifest::locate(opts.from.as_deref())?;
    let app = manifest::load(&manifest_path)?;
    let resolved = variables::Resolved::new(&app, &opts.variables, |k| std::env::var(k).ok())?;
    let state_dir = match &opts.state_dir {
        StateDir::Default => Some(app.dir.join(".spin")),
        StateDir::Unset => None,
        StateDir::Provided(p) => Some(std::path::absolute(p)?),
    };
    let kv = kv::open(state_dir.as_deref())?;
    for (k, v) in &opts.key_values {
        kv.set(k, v.as_bytes())
            .map_err(|e| anyhow!("--key-value {k}: {e}"))?;
    }

    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    let engine = wasmtime::Engine::new(&config).map_err(|e| anyhow!("{e:#}"))?;
    let linker = host::linker(&engine).map_err(|e| anyhow!("{e:#}"))?;
    let mut components = BTreeMap::new();
    for route in &app.routes {
        if components.contains_key(&route.component) {
            continue;
        }
        let c = &app.components[&route.component];
        let config = Arc::new(host::ComponentConfig {
            id: route.component.as_str().into(),
            kv: kv.clone(),
            stores: c.key_value_stores.clone(),
            variables: resolved
                .component(&c.variables)
                .with_context(|| format!("component {}", route.component))?,
            allowed: Arc::new(
                outbound::AllowedHosts::parse(
                    &c.allowed_outbound_hosts
                        .iter()
                        .map(|h| resolved.expand(h))
                        .collect::<anyhow::Result<Vec<_>>>()?,
                )
                .with_context(|| format!("component.{}.allowed_outbound_hosts", route.component))?,
            ),
            environment: c.environment.clone().into_iter().collect(),
        });
        let bytes = std::fs::read(&c.source).with_context(|| {
            format!(
                "reading component {} ({})",
                route.component,
                c.source.display()
            )
        })?;
        let component = wasmtime::component::Component::new(&engine, &bytes)
            .map_err(|e| anyhow!("compiling {}: {e:#}", c.source.display()))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| anyhow!("linking component {}: {e:#}", route.component))?;
        let pre = wasmtime_wasi_http::p2::bindings::ProxyPre::new(pre).map_err(|e| {
            anyhow!(
                "component {} does not export wasi:http/incoming-handler@0.2: {e:#}",
                route.component
            )
        })?;
        components.insert(
            route.component.clone(),
            Arc::new(server::Prepared { pre, config }),
        );
    }

    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                anyhow!("{} is already in use", opts.listen)
            } else {
                anyhow!("unable to listen on {}: {e}", opts.listen)
            }
        })?;
    let local = listener.local_addr()?;
    let base = format!("http://{local}");
    say!(
        "Running {} on portcullis-spin-host, a test host (not Spin)",
        app.name
    );
    match &state_dir {
        Some(dir) => say!(
            "Storing default key-value data to {}",
            dir.join("sqlite_key_value.db").display()
        ),
        None => say!("Storing default key-value data in memory"),
    }
    say!("\nServing {base}");
    say!("Available Routes:");
    for route in &app.routes {
        let shown = if route.wildcard {
            format!(
                "{}{} (wildcard)",
                base,
                if route.prefix.is_empty() {
                    ""
                } else {
                    &route.prefix
                }
            )
        } else {
            format!("{base}{}", route.raw)
        };
        say!("  {}: {shown}", route.component);
    }
    let server = Arc::new(server::Server {
        app,
        components,
        timings: std::env::var("PORTCULLIS_SPIN_HOST_TIMINGS")
            .is_ok_and(|v| !v.is_empty() && v != "0"),
    });
    server.serve(listener, shutdown_signal()).await
}

/// SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn parses_spin_up_flags() {
        let Command::Up(o) = parse_args(args(
            "up -f x/spin.toml --listen 127.0.0.1:0 --key-value config={\"a\":1} --key-value k=v=w --variable n=1 --state-dir=",
        ))
        .expect("parses") else {
            panic!("not up")
        };
        assert_eq!(o.from, Some(PathBuf::from("x/spin.toml")));
        assert_eq!(o.listen.port(), 0);
        assert_eq!(o.key_values[0], ("config".into(), "{\"a\":1}".into()));
        assert_eq!(o.key_values[1], ("k".into(), "v=w".into()));
        assert_eq!(o.variables["n"], "1");
        assert_eq!(o.state_dir, StateDir::Unset);
    }

    #[test]
    fn refuses_unknown_and_incomplete_flags() {
        for bad in [
            "up --bogus",
            "up --listen",
            "up --key-value novalue",
            "down",
            "up --listen nope",
            "kv-set k v",
            "kv-set --state-dir d",
            "kv-delete --state-dir d k v",
        ] {
            assert!(parse_args(args(bad)).is_err(), "{bad}");
        }
        assert!(matches!(parse_args(args("--help")), Ok(Command::Help)));
        assert!(matches!(
            parse_args(args("kv-set --state-dir d k v")),
            Ok(Command::Kv(KvEdit::Set { .. }))
        ));
    }
}
