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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NoSecrets;

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
