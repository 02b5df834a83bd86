//! A policy text as the operator reads about it before anything serves it: every problem on a
//! line of its own, prefixed with the name of the text's source, so `check` over several files,
//! or an editor's quickfix list, points at the right one; and the line that says a text is good,
//! with the policy's warnings (see [`Policy::warnings`]) after it, prefixed the same way.

use std::fmt;

use crate::config::{Policy, Secrets};

/// Why a policy text cannot be used: lines to print, one problem each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<String>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

/// Compile policy `text`, naming it `name` in problems.
pub fn compile(name: &str, text: &str, secrets: &dyn Secrets) -> Result<Policy, Problems> {
    Policy::from_json(text, secrets)
        .map_err(|errors| Problems(errors.0.iter().map(|e| format!("{name}: {e}")).collect()))
}

/// What `check` prints for a policy that compiled: `{name}: ok ({n} routes)`, then one line per
/// warning, `{name}: {pointer}: warning: {message}`. Always "routes", even for one: scripts
/// match the first line. A warning never makes a policy invalid: it is still "ok".
pub fn ok_line(name: &str, policy: &Policy) -> String {
    let mut out = format!("{name}: ok ({} routes)", policy.route_ids().count());
    for warning in policy.warnings() {
        out.push_str(&format!("\n{name}: {warning}"));
    }
    out
}

/// What `check --format json` prints for policy `text` (named `name`), for CI pipelines and
/// editors: `file`, `valid`, `policy` (the version, also of a refused text that is JSON),
/// `routes` (when valid), and `errors` and `warnings`, each with its JSON `pointer` and
/// `message`. The flag is whether the policy is valid.
pub fn json_report(name: &str, text: &str, secrets: &dyn Secrets) -> (bool, serde_json::Value) {
    use serde_json::json;
    let version = crate::PolicyVersion::of_text(text).map(|v| v.to_string());
    match Policy::from_json(text, secrets) {
        Ok(policy) => {
            let warnings: Vec<_> = policy
                .warnings()
                .iter()
                .map(|w| json!({ "pointer": w.pointer, "message": w.message }))
                .collect();
            let report = json!({ "file": name, "valid": true, "policy": version,
                "routes": policy.route_ids().count(), "errors": [], "warnings": warnings });
            (true, report)
        }
        Err(errors) => {
            let errors: Vec<_> = errors
                .0
                .iter()
                .map(|e| json!({ "pointer": e.pointer, "message": e.kind.to_string() }))
                .collect();
            let report = json!({ "file": name, "valid": false, "policy": version,
                "errors": errors, "warnings": [] });
            (false, report)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NoSecrets;

    #[test]
    fn the_json_report_lists_every_error_with_its_pointer_and_the_version() {
        let text = r#"{"version": 2, "routes": [], "bogus": 1}"#;
        let (valid, report) = json_report("p.json", text, &NoSecrets);
        assert!(!valid);
        assert_eq!(report["file"], "p.json");
        assert_eq!(report["valid"], false);
        let version = crate::PolicyVersion::of_text(text).map(|v| v.to_string());
        assert_eq!(report["policy"].as_str(), version.as_deref());
        let pointers: Vec<&str> = report["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["pointer"].as_str())
            .collect();
        assert!(
            pointers.contains(&"/version") && pointers.contains(&"/bogus"),
            "{report}"
        );
        let (valid, report) = json_report("p.json", "not json", &NoSecrets);
        assert!(!valid && report["policy"].is_null(), "{report}");
        let good = r#"{"version": 1, "origins": {"api": {"url": "http://127.0.0.1:9"}},
                       "routes": [{"id": "r", "methods": ["GET"], "path": "/r", "origin": "api",
                                   "auth": "none"}]}"#;
        let (valid, report) = json_report("p.json", good, &NoSecrets);
        assert!(valid && report["routes"] == 1 && report["errors"] == serde_json::json!([]));
    }

    #[test]
    fn every_problem_is_one_line_prefixed_with_the_source() {
        let Err(problems) = compile("p.json", r#"{"version": 2, "routes": []}"#, &NoSecrets) else {
            panic!("an invalid policy compiled");
        };
        assert!(problems.0.len() >= 2, "{problems}");
        for line in &problems.0 {
            assert!(line.starts_with("p.json: /"), "{line}");
            assert!(!line.contains('\n'));
        }
        assert_eq!(problems.to_string().lines().count(), problems.0.len());
    }

    #[test]
    fn a_good_policy_is_ok_with_its_route_count() {
        let text = r#"{"version": 1, "origins": {"api": {"url": "http://127.0.0.1:9"}},
                       "routes": [{"id": "r", "methods": ["GET"], "path": "/r", "origin": "api",
                                   "auth": "none"}]}"#;
        match compile("p.json", text, &NoSecrets) {
            Ok(policy) => assert_eq!(ok_line("p.json", &policy), "p.json: ok (1 routes)"),
            Err(problems) => panic!("{problems}"),
        }
    }

    #[test]
    fn warnings_follow_the_ok_line_one_per_line() {
        let text = r#"{"version": 1, "origins": {"api": {"url": "http://127.0.0.1:9"}},
                       "quotas": {"q": {"limit": 1, "window_s": 1, "by": "header:x-client"}},
                       "routes": [{"id": "r", "methods": ["GET"], "path": "/r", "origin": "api",
                                   "auth": "none", "quota": "q",
                                   "forward_headers": {"allow": ["x-real-ip"]}}]}"#;
        let policy = compile("p.json", text, &NoSecrets).unwrap_or_else(|p| panic!("{p}"));
        let out = ok_line("p.json", &policy);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert_eq!(lines[0], "p.json: ok (1 routes)");
        assert!(
            lines[1].starts_with("p.json: /routes/0/quota: warning: quota \"q\""),
            "{out}"
        );
        assert!(
            lines[2].starts_with("p.json: /routes/0/forward_headers/allow/0: warning: "),
            "{out}"
        );
    }
}
