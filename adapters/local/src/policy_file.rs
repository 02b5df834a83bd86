//! Reading a policy file, with problems phrased the same way by `check` and `serve`.

use std::path::Path;

use portcullis_core::{Policy, Secrets};

/// Why a policy file cannot be used: lines to print, one problem each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<String>);

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

/// `secret_env` names resolve to environment variables natively.
pub fn env_secret(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Read and compile the policy at `path`. Every problem is prefixed with the file name, so the
/// output of `check` over several files, or an editor's quickfix list, points at the right one.
pub fn load(path: &Path, secrets: &dyn Secrets) -> Result<Policy, Problems> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Problems(vec![format!("{shown}: cannot read the file: {e}")]))?;
    compile(&shown.to_string(), &text, secrets)
}

/// Compile policy `text`, naming it `name` in problems.
pub fn compile(name: &str, text: &str, secrets: &dyn Secrets) -> Result<Policy, Problems> {
    Policy::from_json(text, secrets)
        .map_err(|errors| Problems(errors.0.iter().map(|e| format!("{name}: {e}")).collect()))
}

#[cfg(test)]
mod tests {
    use portcullis_core::NoSecrets;

    use super::*;

    #[test]
    fn every_problem_is_one_line_prefixed_with_the_file() {
        let Err(problems) = compile("p.json", r#"{"version": 2, "routes": []}"#, &NoSecrets) else {
            panic!("an invalid policy compiled");
        };
        assert!(problems.0.len() >= 2, "{problems}");
        for line in &problems.0 {
            assert!(line.starts_with("p.json: /"), "{line}");
            assert!(!line.contains('\n'));
        }
    }

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
}
