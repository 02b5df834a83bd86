//! Variables as Spin resolves them: application variables (`[variables]`) take their value from
//! `--variable NAME=VALUE`, else the environment (`SPIN_VARIABLE_<NAME>`, upper-cased), else
//! their `default`; a `required` variable with no value stops the start. Component variables
//! (`[component.ID.variables]`) are templates over application variables (`"{{ name }}"`), and
//! they are all a component can read. Everything is resolved once at start: the environment of a
//! running process does not change, so this gives the same answers as Spin's per-request lookup.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail};

use crate::manifest::App;

/// Spin's rule for variable names: lower-case ASCII letters, digits and single underscores,
/// starting with a letter and ending with a letter or digit.
pub fn check_name(name: &str) -> Result<(), String> {
    let Some(first) = name.bytes().next() else {
        return Err("must not be empty".into());
    };
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        return Err(format!(
            "invalid character {c:?}: only lower-case letters, digits and underscores are allowed"
        ));
    }
    if !first.is_ascii_lowercase() {
        return Err("must start with a lower-case letter".into());
    }
    if !name.ends_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("must end with a letter or digit".into());
    }
    if name.contains("__") {
        return Err("must not contain two underscores in a row".into());
    }
    Ok(())
}

/// Application variables with their values.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    values: BTreeMap<String, String>,
}

impl Resolved {
    /// Resolve every application variable of `app`. `overrides` are `--variable` values; `env`
    /// looks up an environment variable.
    pub fn new(
        app: &App,
        overrides: &BTreeMap<String, String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Resolved> {
        for name in overrides.keys() {
            if !app.variables.contains_key(name) {
                bail!("--variable {name}: the manifest defines no variable {name:?}");
            }
        }
        let mut values = BTreeMap::new();
        for (name, def) in &app.variables {
            let value = overrides
                .get(name)
                .cloned()
                .or_else(|| env(&format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase())))
                .or_else(|| def.default.clone());
            match value {
                Some(v) => {
                    values.insert(name.clone(), v);
                }
                None => bail!(
                    "no provider resolved required variable {name:?} (set SPIN_VARIABLE_{})",
                    name.to_ascii_uppercase()
                ),
            }
        }
        Ok(Resolved { values })
    }

    /// Expand `{{ name }}` expressions in `template`. Unknown names and unmatched braces are
    /// errors, as in Spin.
    pub fn expand(&self, template: &str) -> anyhow::Result<String> {
        let mut out = String::new();
        let mut rest = template;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| anyhow!("unmatched '{{{{' in template {template:?}"))?;
            let name = after[..end].trim();
            let value = self
                .values
                .get(name)
                .ok_or_else(|| anyhow!("template {template:?} names unknown variable {name:?}"))?;
            out.push_str(value);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// The component variables of `component_vars` (name -> template), expanded.
    pub fn component(
        &self,
        component_vars: &BTreeMap<String, String>,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        component_vars
            .iter()
            .map(|(name, template)| {
                self.expand(template)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| anyhow!("variable {name:?}: {e}"))
            })
            .collect()
    }
}

/// Why `fermyon:spin/variables.get` found nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// Not a valid variable name.
    InvalidName(String),
    /// Valid, but the component has no such variable.
    Undefined(String),
}

/// What a component's `variables.get(name)` answers.
pub fn lookup(vars: &BTreeMap<String, String>, name: &str) -> Result<String, LookupError> {
    check_name(name).map_err(|e| LookupError::InvalidName(format!("{name:?}: {e}")))?;
    vars.get(name)
        .cloned()
        .ok_or_else(|| LookupError::Undefined(format!("no variable {name:?} for this component")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn app() -> App {
        crate::manifest::parse(
            r#"
spin_manifest_version = 2
[application]
name = "t"
[variables]
origin = { default = "http://127.0.0.1:1" }
token = { required = true }
[[trigger.http]]
route = "/..."
component = "c"
[component.c]
source = "c.wasm"
[component.c.variables]
origin_url = "{{ origin }}/api"
token = "{{token}}"
"#,
            Path::new("/"),
        )
        .expect("manifest")
    }

    #[test]
    fn names_follow_spins_rules() {
        for ok in ["a", "abc", "a_b1", "x9"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "1a", "a-b", "a__b", "a_", "_a", "é"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolves_overrides_then_env_then_default() {
        let app = app();
        let env = |k: &str| (k == "SPIN_VARIABLE_TOKEN").then(|| "from-env".to_owned());
        let r = Resolved::new(&app, &BTreeMap::new(), env).expect("resolves");
        let vars = r
            .component(&app.components["c"].variables)
            .expect("expands");
        assert_eq!(vars["origin_url"], "http://127.0.0.1:1/api");
        assert_eq!(vars["token"], "from-env");
        let overrides = BTreeMap::from([("origin".to_owned(), "http://o".to_owned())]);
        let r = Resolved::new(&app, &overrides, env).expect("resolves");
        assert_eq!(r.expand("{{ origin }}").expect("expands"), "http://o");
    }

    #[test]
    fn required_without_value_and_bad_templates_fail() {
        let app = app();
        assert!(Resolved::new(&app, &BTreeMap::new(), |_| None).is_err());
        let r = Resolved::new(&app, &BTreeMap::new(), |_| Some("v".into())).expect("resolves");
        assert!(r.expand("{{ nope }}").is_err());
        assert!(r.expand("{{ origin").is_err());
        let bad = BTreeMap::from([("nope".to_owned(), "x".to_owned())]);
        assert!(Resolved::new(&app, &bad, |_| Some("v".into())).is_err());
    }

    #[test]
    fn lookup_distinguishes_invalid_and_undefined() {
        let vars = BTreeMap::from([("a".to_owned(), "1".to_owned())]);
        assert_eq!(lookup(&vars, "a"), Ok("1".to_owned()));
        assert!(matches!(
            lookup(&vars, "B"),
            Err(LookupError::InvalidName(_))
        ));
        assert!(matches!(lookup(&vars, "b"), Err(LookupError::Undefined(_))));
    }
}
