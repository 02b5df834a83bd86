//! `cargo run -p portcullis-conformance --bin mint`
//!
//! 1. Makes the TEST ONLY key fixtures in `tests/keys/` (only those missing: keys are generated
//!    once and committed) and writes `tests/keys/public.jwks.json`.
//! 2. Signs every token in `tests/tokens.json` into `tests/vectors/tokens.generated.json`.
//! 3. Pastes public JWKs into vector and config files: `"${jwk:NAME}"` placeholders and
//!    existing one-line JWKs with a fixture `kid` are replaced by the key's current public JWK.
//!
//! Signing is deterministic (PSS uses a fixed seed), so running it again changes nothing.

use std::path::{Path, PathBuf};

use anyhow::Context;
use portcullis_conformance::jose;

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            json_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let suite = portcullis_conformance::suite_dir();
    let keys = jose::load_or_generate_keys(&suite.join("keys"))?;

    let mut public = Vec::new();
    for key in keys.values() {
        if let Some(line) = key.public_jwk_line()? {
            public.push(line);
        }
    }
    let jwks = format!("{{\"keys\": [\n  {}\n]}}\n", public.join(",\n  "));
    std::fs::write(suite.join("keys").join("public.jwks.json"), &jwks)?;

    let source_path = suite.join("tokens.json");
    let source: jose::TokenSource =
        serde_json::from_str(&std::fs::read_to_string(&source_path)?)
            .with_context(|| format!("parsing {}", source_path.display()))?;
    let tokens = jose::mint_all(&source, &keys)?;
    let out = suite
        .join("vectors")
        .join(portcullis_conformance::vector::TOKENS_FILE);
    std::fs::write(&out, serde_json::to_string_pretty(&tokens)? + "\n")?;
    println!("mint: {} tokens -> {}", tokens.len(), out.display());

    let mut files = Vec::new();
    json_files(&suite.join("vectors"), &mut files)?;
    json_files(&suite.join("configs"), &mut files)?;
    for file in files {
        if file.ends_with(portcullis_conformance::vector::TOKENS_FILE) {
            continue;
        }
        let text = std::fs::read_to_string(&file)?;
        let filled = jose::fill_jwks(&text, &keys)
            .with_context(|| format!("filling JWKs in {}", file.display()))?;
        if filled != text {
            std::fs::write(&file, filled)?;
            println!("mint: public JWKs updated in {}", file.display());
        }
    }
    Ok(())
}
