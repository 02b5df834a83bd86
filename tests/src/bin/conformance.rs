//! Run vector files against a gateway.
//!
//! ```text
//! conformance [--xfail FILE] [--origin-listen 127.0.0.1:PORT] --binary PATH   vectors/*.json
//! conformance [--xfail FILE] [--origin-listen 127.0.0.1:PORT] --base-url URL  vectors/one.json
//! conformance --print-config --origin-listen 127.0.0.1:PORT [--idp-listen 127.0.0.1:PORT] vectors/one.json
//! ```
//!
//! Files that use the test IdP (`${IDP}`) start it on `--idp-listen` (any free port by default;
//! give the same fixed port to `--print-config` and to the run against an external gateway).
//!
//! `--binary` starts a native `portcullis` per file. `--base-url` uses a gateway that is already
//! running (for instance `wrangler dev` or `spin up`) with the file's config: print that config
//! with `--print-config`, using the same `--origin-listen` port so `${ORIGIN}` resolves to the
//! origin this command will start.

use std::path::PathBuf;

use anyhow::{bail, Context};
use portcullis_conformance::runner::{self, Summary, XFail};
use portcullis_conformance::target::{ExternalTarget, NativeTarget, Target};
use portcullis_conformance::vector::{self, VectorFile};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut files = Vec::new();
    let mut base_url = None;
    let mut binary = None;
    let mut xfail = XFail::none();
    let mut origin_listen = "127.0.0.1:0".to_owned();
    let mut idp_listen = "127.0.0.1:0".to_owned();
    let mut print_config = false;
    let mut name = "external".to_owned();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--base-url" => base_url = Some(args.next().context("--base-url URL")?),
            "--binary" => binary = Some(PathBuf::from(args.next().context("--binary PATH")?)),
            "--xfail" => xfail = XFail::load(&PathBuf::from(args.next().context("--xfail FILE")?))?,
            "--origin-listen" => origin_listen = args.next().context("--origin-listen ADDR")?,
            "--idp-listen" => idp_listen = args.next().context("--idp-listen ADDR")?,
            "--target-name" => name = args.next().context("--target-name NAME")?,
            "--print-config" => print_config = true,
            "-h" | "--help" => {
                println!("see the doc comment in tests/src/bin/conformance.rs");
                return Ok(());
            }
            f => files.push(PathBuf::from(f)),
        }
    }
    if files.is_empty() {
        files = vector::vector_files(&portcullis_conformance::vectors_dir())?;
    }
    if print_config {
        if origin_listen.ends_with(":0") {
            bail!("--print-config needs a fixed --origin-listen port");
        }
        if idp_listen.ends_with(":0")
            && files
                .iter()
                .any(|f| VectorFile::load(f).is_ok_and(|v| v.needs_idp()))
        {
            bail!(
                "--print-config for a file that uses the test IdP needs a fixed --idp-listen port"
            );
        }
        for f in &files {
            let file = VectorFile::load(f)?;
            let ph = runner::Placeholders {
                origin: format!("http://{origin_listen}"),
                dead_origin: "http://127.0.0.1:9".into(),
                tokens: Default::default(),
                idp: Some(format!("http://{idp_listen}")),
            };
            println!(
                "{}",
                ph.expand(&serde_json::to_string_pretty(&file.config)?)?
            );
            for (k, v) in &file.secrets {
                eprintln!("secret {k}={v}");
            }
        }
        return Ok(());
    }
    let mut target: Box<dyn Target> = match (base_url, binary) {
        (Some(url), None) => {
            if files.len() != 1 {
                bail!("--base-url runs one vector file (the gateway runs that file's config)");
            }
            Box::new(ExternalTarget {
                base_url: url,
                name,
            })
        }
        (None, Some(bin)) => Box::new(NativeTarget::new(bin)?),
        _ => bail!("give exactly one of --base-url URL or --binary PATH"),
    };
    let reports =
        runner::run_files_with_idp(target.as_mut(), &files, &xfail, &origin_listen, &idp_listen)?;
    let mut total = Summary::default();
    for r in &reports {
        total.add(r.summary());
    }
    if total.xfailed > 0 {
        println!(
            "conformance: {} expected failures (listed above as XFAIL)",
            total.xfailed
        );
    }
    println!("{}", total.line());
    if total.failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
