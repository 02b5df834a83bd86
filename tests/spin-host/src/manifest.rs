//! `spin.toml` (manifest version 2): the part of it this test host runs.
//!
//! Supported: `[application]`, `[variables]`, `[[trigger.http]]` with a literal route or a
//! trailing `/...` wildcard naming a component by id, and per component `source` (a local file),
//! `allowed_outbound_hosts`, `key_value_stores`, `variables`, `environment`, plus the fields that
//! only other tools read (`description`, `build`, `tool`). Anything else a real Spin would act on
//! (files, SQLite databases, AI models, dependencies, remote sources, other triggers) is refused
//! with a message that names it, so a manifest never runs differently here without saying so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use serde::Deserialize;

/// A manifest, checked and with paths resolved against its directory.
#[derive(Debug, Clone)]
pub struct App {
    /// `application.name`.
    pub name: String,
    /// The directory holding the manifest.
    pub dir: PathBuf,
    /// `[variables]`: name -> definition.
    pub variables: BTreeMap<String, VariableDef>,
    /// HTTP routes, in manifest order.
    pub routes: Vec<Route>,
    /// Components by id.
    pub components: BTreeMap<String, Component>,
}

/// An application variable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariableDef {
    /// Used when no provider has a value.
    #[serde(default)]
    pub default: Option<String>,
    /// Must come from a provider (the environment) when true.
    #[serde(default)]
    pub required: bool,
    /// Only affects how Spin logs it; kept so that manifests parse.
    #[serde(default)]
    #[allow(dead_code)]
    pub secret: bool,
    /// Documentation only.
    #[serde(default)]
    #[allow(dead_code)]
    pub description: Option<String>,
}

/// One `[[trigger.http]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The route as written (`/...`, `/api/...`, `/health`).
    pub raw: String,
    /// The literal prefix: the route without a trailing `/...`.
    pub prefix: String,
    /// True for a trailing `/...` wildcard.
    pub wildcard: bool,
    /// The component id it runs.
    pub component: String,
}

impl Route {
    fn parse(raw: &str, component: String) -> anyhow::Result<Route> {
        if !raw.starts_with('/') {
            bail!("route {raw:?} must start with '/'");
        }
        let (prefix, wildcard) = match raw.strip_suffix("/...") {
            Some(prefix) => (prefix.to_owned(), true),
            None => (raw.trim_end_matches('/').to_owned(), false),
        };
        if prefix.split('/').any(|s| s.starts_with(':') || s == "...") {
            bail!(
                "route {raw:?}: named segments (':name') and inner wildcards are not supported \
                 by this test host; use a literal route or a trailing '/...'"
            );
        }
        Ok(Route {
            raw: raw.to_owned(),
            prefix,
            wildcard,
            component,
        })
    }

    /// The part of `path` after this route's prefix (Spin's `spin-path-info`), if it matches.
    pub fn matches<'p>(&self, path: &'p str) -> Option<&'p str> {
        if self.wildcard {
            let rest = path.strip_prefix(self.prefix.as_str())?;
            (rest.is_empty() || rest.starts_with('/')).then_some(rest)
        } else {
            let exact = if self.prefix.is_empty() {
                "/"
            } else {
                self.prefix.as_str()
            };
            (path == exact).then_some("")
        }
    }
}

/// One component, as this host runs it.
#[derive(Debug, Clone)]
pub struct Component {
    /// The `.wasm` file.
    pub source: PathBuf,
    /// `allowed_outbound_hosts` as written (templates not yet expanded).
    pub allowed_outbound_hosts: Vec<String>,
    /// Key-value store labels it may open.
    pub key_value_stores: Vec<String>,
    /// Component variables: name -> template over application variables.
    pub variables: BTreeMap<String, String>,
    /// Environment variables the component sees.
    pub environment: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    spin_manifest_version: toml::Value,
    application: ApplicationFile,
    #[serde(default)]
    variables: BTreeMap<String, VariableDef>,
    #[serde(default)]
    trigger: BTreeMap<String, toml::Value>,
    #[serde(default)]
    component: BTreeMap<String, ComponentFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplicationFile {
    name: String,
    #[serde(default)]
    #[allow(dead_code)]
    version: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    authors: Option<Vec<String>>,
    #[serde(default)]
    trigger: Option<toml::Table>,
    #[serde(default)]
    #[allow(dead_code)]
    tool: Option<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpTriggerFile {
    route: toml::Value,
    component: toml::Value,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    executor: Option<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ComponentFile {
    source: toml::Value,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    allowed_http_hosts: Option<toml::Value>,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    #[serde(default)]
    files: Option<toml::Value>,
    #[serde(default)]
    exclude_files: Option<toml::Value>,
    #[serde(default)]
    sqlite_databases: Option<Vec<String>>,
    #[serde(default)]
    ai_models: Option<Vec<String>>,
    #[serde(default)]
    dependencies: Option<toml::Table>,
    #[serde(default)]
    dependencies_inherit_configuration: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    build: Option<toml::Table>,
    #[serde(default)]
    #[allow(dead_code)]
    tool: Option<toml::Table>,
}

/// Find the manifest for `-f/--from`: a file, or a directory holding `spin.toml`.
pub fn locate(from: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = from.unwrap_or(Path::new("spin.toml"));
    if path.is_dir() {
        let file = path.join("spin.toml");
        if !file.is_file() {
            bail!("{} has no spin.toml", path.display());
        }
        return Ok(file);
    }
    if !path.is_file() {
        bail!("no manifest at {}", path.display());
    }
    Ok(path.to_path_buf())
}

/// Read and check the manifest at `path`.
pub fn load(path: &Path) -> anyhow::Result<App> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let dir = path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."));
    let dir = std::path::absolute(dir).with_context(|| format!("resolving {}", dir.display()))?;
    parse(&text, &dir).with_context(|| format!("{}", path.display()))
}

/// Parse manifest `text` whose relative paths are relative to `dir`.
pub fn parse(text: &str, dir: &Path) -> anyhow::Result<App> {
    let file: ManifestFile = toml::from_str(text).map_err(|e| anyhow!("{e}"))?;
    if file.spin_manifest_version.as_integer() != Some(2) {
        bail!("spin_manifest_version must be 2 (this test host reads only manifest version 2)");
    }
    if let Some(trigger) = &file.application.trigger {
        for (kind, settings) in trigger {
            let base_ok = kind == "http"
                && settings.as_table().is_some_and(|t| {
                    t.iter()
                        .all(|(k, v)| k == "base" && v.as_str().is_some_and(|b| b == "/"))
                });
            if !base_ok {
                bail!("application.trigger.{kind}: only `base = \"/\"` for http is supported by this test host");
            }
        }
    }
    for (name, def) in &file.variables {
        crate::variables::check_name(name)
            .map_err(|e| anyhow!("variables.{name}: invalid name: {e}"))?;
        if def.required == def.default.is_some() {
            bail!("variables.{name}: must have exactly one of `default` or `required = true`");
        }
    }
    let mut routes = Vec::new();
    for (kind, entries) in &file.trigger {
        if kind != "http" {
            bail!("trigger.{kind}: only HTTP triggers are supported by this test host");
        }
        let entries = entries
            .as_array()
            .ok_or_else(|| anyhow!("trigger.http must be an array of tables ([[trigger.http]])"))?;
        for (i, entry) in entries.iter().enumerate() {
            let t: HttpTriggerFile = entry
                .clone()
                .try_into()
                .map_err(|e| anyhow!("trigger.http[{i}]: {e}"))?;
            let _ = &t.id;
            if t.executor.is_some() {
                bail!("trigger.http[{i}]: `executor` is not supported by this test host (wasi:http only)");
            }
            let route = t.route.as_str().ok_or_else(|| {
                anyhow!(
                    "trigger.http[{i}].route: private routes are not supported by this test host"
                )
            })?;
            let component = t.component.as_str().ok_or_else(|| {
                anyhow!("trigger.http[{i}].component: inline components are not supported by this test host; name a [component.ID]")
            })?;
            if !file.component.contains_key(component) {
                bail!("trigger.http[{i}].component: no component {component:?}");
            }
            let route = Route::parse(route, component.to_owned())
                .map_err(|e| anyhow!("trigger.http[{i}]: {e}"))?;
            if routes.iter().any(|r: &Route| r.raw == route.raw) {
                bail!("trigger.http[{i}]: duplicate route {:?}", route.raw);
            }
            routes.push(route);
        }
    }
    if routes.is_empty() {
        bail!("no [[trigger.http]] routes");
    }
    let mut components = BTreeMap::new();
    for (id, c) in file.component {
        let unsupported = [
            ("files", c.files.is_some()),
            ("exclude_files", c.exclude_files.is_some()),
            (
                "sqlite_databases",
                c.sqlite_databases.as_ref().is_some_and(|v| !v.is_empty()),
            ),
            (
                "ai_models",
                c.ai_models.as_ref().is_some_and(|v| !v.is_empty()),
            ),
            (
                "dependencies",
                c.dependencies.as_ref().is_some_and(|v| !v.is_empty()),
            ),
            (
                "dependencies_inherit_configuration",
                c.dependencies_inherit_configuration.is_some(),
            ),
        ];
        if let Some((field, _)) = unsupported.iter().find(|(_, present)| *present) {
            bail!("component.{id}.{field} is not supported by this test host");
        }
        if c.allowed_http_hosts.is_some() {
            bail!("component.{id}.allowed_http_hosts is a manifest v1 field; use allowed_outbound_hosts");
        }
        let source = c.source.as_str().ok_or_else(|| {
            anyhow!("component.{id}.source: only a local file path is supported by this test host")
        })?;
        for name in c.variables.keys() {
            crate::variables::check_name(name)
                .map_err(|e| anyhow!("component.{id}.variables.{name}: invalid name: {e}"))?;
        }
        for store in &c.key_value_stores {
            if store != "default" {
                bail!("component.{id}.key_value_stores: only the \"default\" store exists without a runtime config (got {store:?})");
            }
        }
        components.insert(
            id,
            Component {
                source: dir.join(source),
                allowed_outbound_hosts: c.allowed_outbound_hosts,
                key_value_stores: c.key_value_stores,
                variables: c.variables,
                environment: c.environment,
            },
        );
    }
    Ok(App {
        name: file.application.name,
        dir: dir.to_path_buf(),
        variables: file.variables,
        routes,
        components,
    })
}

impl App {
    /// The route for `path`: an exact route first, else the wildcard with the longest prefix.
    pub fn route<'p>(&self, path: &'p str) -> Option<(&Route, &'p str)> {
        let exact = self
            .routes
            .iter()
            .filter(|r| !r.wildcard)
            .find_map(|r| r.matches(path).map(|info| (r, info)));
        exact.or_else(|| {
            self.routes
                .iter()
                .filter(|r| r.wildcard)
                .filter_map(|r| r.matches(path).map(|info| (r, info)))
                .max_by_key(|(r, _)| r.prefix.len())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
spin_manifest_version = 2
[application]
name = "t"
[variables]
greeting = { default = "hi" }
secret = { required = true, secret = true }
[[trigger.http]]
route = "/..."
component = "c"
[[trigger.http]]
route = "/exact"
component = "c"
[component.c]
source = "c.wasm"
key_value_stores = ["default"]
allowed_outbound_hosts = ["http://127.0.0.1:*"]
[component.c.variables]
greeting = "{{ greeting }}!"
[component.c.build]
command = "cargo build"
"#;

    #[test]
    fn parses_a_minimal_manifest() {
        let app = parse(MINIMAL, Path::new("/apps/t")).expect("parses");
        assert_eq!(app.name, "t");
        assert_eq!(app.routes.len(), 2);
        let c = &app.components["c"];
        assert_eq!(c.source, Path::new("/apps/t/c.wasm"));
        assert_eq!(c.variables["greeting"], "{{ greeting }}!");
        assert!(app.variables["secret"].required);
    }

    #[test]
    fn routes_prefer_exact_then_longest_prefix() {
        let app = parse(MINIMAL, Path::new("/")).expect("parses");
        let (r, info) = app.route("/exact").expect("matches");
        assert_eq!((r.raw.as_str(), info), ("/exact", ""));
        let (r, info) = app.route("/other/x").expect("matches");
        assert_eq!((r.raw.as_str(), info), ("/...", "/other/x"));
        let route = Route::parse("/api/...", "c".into()).expect("route");
        assert_eq!(route.matches("/api/x"), Some("/x"));
        assert_eq!(route.matches("/api"), Some(""));
        assert_eq!(route.matches("/apix"), None);
    }

    #[test]
    fn refuses_what_it_cannot_run() {
        for (needle, replacement) in [
            (
                "source = \"c.wasm\"",
                "source = \"c.wasm\"\nfiles = [\"x\"]",
            ),
            ("route = \"/...\"", "route = \"/:id\""),
            ("spin_manifest_version = 2", "spin_manifest_version = 1"),
            ("[component.c.build]", "[component.c.bogus]"),
            ("greeting = { default = \"hi\" }", "greeting = {}"),
            (
                "key_value_stores = [\"default\"]",
                "key_value_stores = [\"other\"]",
            ),
        ] {
            let text = MINIMAL.replace(needle, replacement);
            assert!(
                parse(&text, Path::new("/")).is_err(),
                "accepted: {replacement}"
            );
        }
    }
}
