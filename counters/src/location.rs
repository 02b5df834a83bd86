//! Where a counter store is, as the operator writes it in `--counter-store`.
//!
//! | form | meaning |
//! | --- | --- |
//! | `memory` | in this process only (the default) |
//! | `redis://[USER:PASSWORD@]HOST:PORT[/DB]` | one Redis or Valkey node |
//! | `rediss://…` | the same over TLS (the system's roots; `#insecure` skips verification) |
//! | `redis+sentinel://[USER:PASSWORD@]H1:P1[,H2:P2…]/MASTER[/DB]` | the master Sentinel names `MASTER` |
//! | `redis+cluster://[USER:PASSWORD@]H1:P1[,H2:P2…]` | a Redis Cluster, found from any of its nodes |
//!
//! A password in the URL is the one secret here: [`Location::describe`] never shows it.

use std::fmt;

/// A parsed `--counter-store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// In this process.
    Memory,
    /// One node, as a URL the Redis client reads (`redis://` or `rediss://`).
    Node(String),
    /// The master Sentinel names, and the node URL template (auth, DB) to reach it with.
    Sentinel {
        /// `HOST:PORT` of each Sentinel.
        sentinels: Vec<String>,
        /// The master's name in Sentinel's configuration.
        master: String,
        /// Credentials for the master, from the URL.
        auth: Option<(String, String)>,
        /// The database number.
        db: i64,
    },
    /// `redis://[auth@]HOST:PORT` of each seed node.
    Cluster(Vec<String>),
}

/// Why a `--counter-store` value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocationError {
    /// Not one of the forms in the table above.
    UnknownScheme(String),
    /// No `HOST:PORT` at all.
    NoHosts,
    /// A host that is not `HOST:PORT` with a port number.
    BadHost(String),
    /// A Sentinel URL without the master's name.
    NoMaster,
    /// A database that is not a number (or given to a Cluster, which has only database 0).
    BadDatabase(String),
}

impl fmt::Display for LocationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocationError::UnknownScheme(s) => write!(
                f,
                "--counter-store {s:?}: expected memory, redis://, rediss://, redis+sentinel:// or redis+cluster://"
            ),
            LocationError::NoHosts => f.write_str("--counter-store names no HOST:PORT"),
            LocationError::BadHost(h) => {
                write!(f, "--counter-store host {h:?} is not HOST:PORT")
            }
            LocationError::NoMaster => f.write_str(
                "--counter-store redis+sentinel:// needs the master's name: redis+sentinel://HOST:PORT/MASTER",
            ),
            LocationError::BadDatabase(d) => write!(
                f,
                "--counter-store database {d:?} is not a number (a Cluster has only database 0)"
            ),
        }
    }
}

impl std::error::Error for LocationError {}

impl Location {
    /// Read an operator's `--counter-store` value.
    pub fn parse(text: &str) -> Result<Location, LocationError> {
        let text = text.trim();
        if text == "memory" {
            return Ok(Location::Memory);
        }
        if let Some(rest) = text.strip_prefix("redis+sentinel://") {
            let (auth, hosts, path) = split(rest)?;
            let mut segments = path.split('/').filter(|s| !s.is_empty());
            let master = segments.next().ok_or(LocationError::NoMaster)?.to_owned();
            let db = match segments.next() {
                None => 0,
                Some(d) => d
                    .parse()
                    .map_err(|_| LocationError::BadDatabase(d.to_owned()))?,
            };
            return Ok(Location::Sentinel {
                sentinels: hosts,
                master,
                auth,
                db,
            });
        }
        if let Some(rest) = text.strip_prefix("redis+cluster://") {
            let (auth, hosts, path) = split(rest)?;
            if !path.trim_matches('/').is_empty() && path.trim_matches('/') != "0" {
                return Err(LocationError::BadDatabase(
                    path.trim_matches('/').to_owned(),
                ));
            }
            let auth = auth.map_or(String::new(), |(u, p)| format!("{u}:{p}@"));
            let nodes = hosts.iter().map(|h| format!("redis://{auth}{h}")).collect();
            return Ok(Location::Cluster(nodes));
        }
        if let Some(rest) = text
            .strip_prefix("redis://")
            .or_else(|| text.strip_prefix("rediss://"))
        {
            let (_, hosts, path) = split(rest.split('#').next().unwrap_or(rest))?;
            if hosts.len() != 1 {
                return Err(LocationError::BadHost(hosts.join(",")));
            }
            let db = path.trim_matches('/');
            if !db.is_empty() && db.parse::<i64>().is_err() {
                return Err(LocationError::BadDatabase(db.to_owned()));
            }
            return Ok(Location::Node(text.to_owned()));
        }
        Err(LocationError::UnknownScheme(clip(text)))
    }

    /// The location for logs and `/readyz`: hosts and names, never a password.
    pub fn describe(&self) -> String {
        match self {
            Location::Memory => "memory (this process only)".to_owned(),
            Location::Node(url) => {
                let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
                format!("{scheme}://{}", hide_auth(rest))
            }
            Location::Sentinel {
                sentinels, master, ..
            } => format!("redis+sentinel://{}/{master}", sentinels.join(",")),
            Location::Cluster(nodes) => format!(
                "redis+cluster://{}",
                nodes
                    .iter()
                    .map(|n| hide_auth(n.trim_start_matches("redis://")))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }
}

/// `[USER:PASSWORD@]H1:P1,H2:P2[/PATH]` into its credentials, checked hosts and path.
type Parts<'a> = (Option<(String, String)>, Vec<String>, &'a str);

fn split(rest: &str) -> Result<Parts<'_>, LocationError> {
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (auth, hosts) = match authority.rsplit_once('@') {
        Some((auth, hosts)) => {
            let (user, password) = auth.split_once(':').unwrap_or(("", auth));
            (Some((user.to_owned(), password.to_owned())), hosts)
        }
        None => (None, authority),
    };
    let hosts: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| check_host(h).map(|()| h.to_owned()))
        .collect::<Result<_, _>>()?;
    if hosts.is_empty() {
        return Err(LocationError::NoHosts);
    }
    Ok((auth, hosts, path))
}

fn check_host(host: &str) -> Result<(), LocationError> {
    let bad = || LocationError::BadHost(clip(host));
    let (name, port) = host.rsplit_once(':').ok_or_else(bad)?;
    let name_ok = !name.is_empty()
        && (name.starts_with('[') && name.ends_with(']')
            || name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'));
    match (name_ok, port.parse::<u16>()) {
        (true, Ok(p)) if p > 0 => Ok(()),
        _ => Err(bad()),
    }
}

fn hide_auth(authority_and_path: &str) -> String {
    match authority_and_path.split_once('@') {
        Some((_, rest)) => format!("***@{rest}"),
        None => authority_and_path.to_owned(),
    }
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_reads() {
        assert_eq!(Location::parse("memory"), Ok(Location::Memory));
        assert_eq!(
            Location::parse("redis://127.0.0.1:6379/2"),
            Ok(Location::Node("redis://127.0.0.1:6379/2".into()))
        );
        assert_eq!(
            Location::parse("rediss://cache.internal:6380#insecure"),
            Ok(Location::Node(
                "rediss://cache.internal:6380#insecure".into()
            ))
        );
        assert_eq!(
            Location::parse("redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26379/orders/3"),
            Ok(Location::Sentinel {
                sentinels: vec!["10.0.0.1:26379".into(), "10.0.0.2:26379".into()],
                master: "orders".into(),
                auth: Some((String::new(), "pw".into())),
                db: 3,
            })
        );
        assert_eq!(
            Location::parse("redis+cluster://u:pw@h1:7000,h2:7001,[::1]:7002"),
            Ok(Location::Cluster(vec![
                "redis://u:pw@h1:7000".into(),
                "redis://u:pw@h2:7001".into(),
                "redis://u:pw@[::1]:7002".into(),
            ]))
        );
    }

    #[test]
    fn malformed_values_are_refused_with_what_is_wrong() {
        for (text, wanted) in [
            ("redis:/127.0.0.1:6379", "expected memory"),
            ("mysql://h:1", "expected memory"),
            ("redis://", "no HOST:PORT"),
            ("redis://h", "not HOST:PORT"),
            ("redis://h:0", "not HOST:PORT"),
            ("redis://h:99999", "not HOST:PORT"),
            ("redis://h:1,h:2", "not HOST:PORT"),
            ("redis://h:1/x", "not a number"),
            ("redis+sentinel://h:1", "master's name"),
            ("redis+sentinel://h:1/m/x", "not a number"),
            ("redis+cluster://h:1/3", "only database 0"),
            ("redis+cluster://h:1,bad host:2", "not HOST:PORT"),
        ] {
            let error = Location::parse(text).expect_err(text).to_string();
            assert!(error.contains(wanted), "{text}: {error}");
        }
    }

    #[test]
    fn descriptions_never_show_a_password() {
        for text in [
            "redis://:hunter2@h:1/0",
            "rediss://admin:hunter2@h:1",
            "redis+sentinel://:hunter2@h:1/m",
            "redis+cluster://u:hunter2@h:1,h:2",
        ] {
            let described = Location::parse(text).unwrap().describe();
            assert!(!described.contains("hunter2"), "{described}");
            assert!(described.contains("h:1"), "{described}");
        }
    }
}
