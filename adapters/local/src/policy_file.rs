//! Reading a policy file, with problems phrased the same way by `check` and `serve` (the core's
//! [`policy_report`]).

use std::path::Path;

use portcullis_core::policy_report::{self, Problems};
use portcullis_core::{Policy, Secrets};

/// `secret_env` names resolve to environment variables natively.
pub fn env_secret(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Read and compile the policy at `path`. Every problem is prefixed with the file name.
pub fn load(path: &Path, secrets: &dyn Secrets) -> Result<Policy, Problems> {
    load_text(path, secrets).map(|(_, policy)| policy)
}

/// [`load`], also returning the text that was compiled (what a reload compares against).
pub fn load_text(path: &Path, secrets: &dyn Secrets) -> Result<(String, Policy), Problems> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Problems(vec![format!("{shown}: cannot read the file: {e}")]))?;
    let policy = policy_report::compile(&shown.to_string(), &text, secrets)?;
    Ok((text, policy))
}

#[cfg(test)]
mod tests {
    use portcullis_core::NoSecrets;

    use super::*;

    #[test]
    fn an_unreadable_file_says_so() {
        let Err(problems) = load(Path::new("/nonexistent/portcullis.json"), &NoSecrets) else {
            panic!("read a file that does not exist");
        };
        assert_eq!(problems.0.len(), 1);
        assert!(
            problems.0[0].starts_with("/nonexistent/portcullis.json: cannot read the file"),
            "{problems}"
        );
    }

    #[test]
    fn a_readable_file_is_compiled_under_its_name() {
        let path = std::env::temp_dir().join(format!("portcullis-{}.json", std::process::id()));
        std::fs::write(&path, r#"{"version": 2, "routes": []}"#).unwrap_or_else(|e| panic!("{e}"));
        let got = load(&path, &NoSecrets);
        let _ = std::fs::remove_file(&path);
        let Err(problems) = got else {
            panic!("an invalid policy compiled");
        };
        let prefix = format!("{}: /", path.display());
        assert!(
            problems.0.iter().all(|l| l.starts_with(&prefix)),
            "{problems}"
        );
    }
}
