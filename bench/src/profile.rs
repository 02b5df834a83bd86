//! Where the native gateway's CPU goes: `perf report` output folded into a few categories a reader
//! can act on, and CPU time per request for each native contender (from `perf stat`).
//!
//! `bench/run` records the profile while the HS256 cached case runs (the case the headline target
//! is about) and measures each contender's task clock over the same case. Both are optional: a
//! machine without `perf` gets a page without this section.

use std::path::Path;

/// Whether a sample in object `dso`, function `symbol` belongs to a category.
type Test = fn(dso: &str, symbol: &str) -> bool;

/// Categories, tried in order; the first whose test matches a sample's symbol (or object)
/// takes it.
const CATEGORIES: &[(&str, Test)] = &[
    ("kernel: TCP/IP, system calls, scheduling", |dso, _| {
        dso.starts_with("[kernel")
    }),
    ("memory allocator", |_, sym| {
        [
            "malloc",
            "free",
            "_int_",
            "unlink_chunk",
            "mi_",
            "_mi_",
            "realloc",
            "calloc",
        ]
        .iter()
        .any(|p| sym.contains(p))
    }),
    ("memory copies (memcpy, memmove)", |_, sym| {
        sym.contains("memmove") || sym.contains("memcpy") || sym.contains("memset")
    }),
    ("policy decision (portcullis-core)", |_, sym| {
        sym.contains("portcullis_core::")
    }),
    ("signature and hash crypto", |_, sym| {
        ["ring::", "ring_core", "sha2::", "hmac::", "p256::", "rsa::"]
            .iter()
            .any(|p| sym.contains(p))
    }),
    ("log lines (JSON)", |_, sym| {
        sym.contains("serde_json") || sym.contains("portcullis::log")
    }),
    (
        "HTTP/1 parsing and encoding (hyper, httparse, http)",
        |_, sym| sym.contains("hyper") || sym.contains("httparse") || sym.contains("http::"),
    ),
    ("async runtime (tokio, futures)", |_, sym| {
        sym.contains("tokio::") || sym.contains("futures_")
    }),
    ("gateway glue (portcullis)", |_, sym| {
        sym.contains("portcullis::")
    }),
    ("clock (vDSO)", |dso, _| dso == "[vdso]"),
];

/// One line of `perf report --no-children --sort dso,symbol --stdio -g none`:
/// `  5.39%  libc.so.6  [.] __memmove_avx_unaligned_erms`.
fn parse_line(line: &str) -> Option<(f64, &str, &str)> {
    let line = line.trim_start();
    let (percent, rest) = line.split_once('%')?;
    let percent: f64 = percent.trim().parse().ok()?;
    let rest = rest.trim_start();
    let (dso, rest) = rest.split_once(char::is_whitespace)?;
    let symbol = rest.trim_start();
    let symbol = symbol
        .strip_prefix("[.]")
        .or_else(|| symbol.strip_prefix("[k]"))
        .unwrap_or(symbol)
        .trim();
    Some((percent, dso, symbol))
}

/// Shares of the profile per category, largest first, with "other" last.
pub fn categorise(report: &str) -> Vec<(&'static str, f64)> {
    let mut shares = vec![0.0; CATEGORIES.len() + 1];
    for (percent, dso, symbol) in report
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(parse_line)
    {
        let index = CATEGORIES
            .iter()
            .position(|(_, test)| test(dso, symbol))
            .unwrap_or(CATEGORIES.len());
        shares[index] += percent;
    }
    let mut out: Vec<(&'static str, f64)> = CATEGORIES
        .iter()
        .map(|(name, _)| *name)
        .zip(shares.iter().copied())
        .filter(|(_, share)| *share > 0.0)
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    if shares[CATEGORIES.len()] > 0.0 {
        out.push(("everything else", shares[CATEGORIES.len()]));
    }
    out
}

/// CPU time per request of `contender` on `case`, in µs, from the run's `.cpu` (µs used during
/// the run) and `.wrk.json` (requests served) files.
fn cpu_per_request(results: &Path, contender: &str, case: &str) -> Option<f64> {
    let stem = results.join(format!("{contender}__{case}"));
    let used: f64 = std::fs::read_to_string(stem.with_extension("cpu"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let wrk = std::fs::read_to_string(stem.with_extension("wrk.json")).ok()?;
    let summary: serde_json::Value = serde_json::from_str(wrk.lines().last()?).ok()?;
    let requests = summary.get("requests")?.as_f64().filter(|n| *n > 0.0)?;
    Some(used / requests)
}

/// The page's section: CPU per request of every native contender on every case they ran (from
/// `results/`), and the gateway's profile (`profile.txt`), whichever the run recorded.
pub fn section(run: &Path, cases: &[(&str, &str)], contenders: &[&str]) -> Option<String> {
    let results = run.join("results");
    let mut rows = String::new();
    for (case, what) in cases {
        let cells: Vec<Option<f64>> = contenders
            .iter()
            .map(|c| cpu_per_request(&results, c, case))
            .collect();
        if cells.iter().all(Option::is_none) {
            continue;
        }
        rows.push_str(&format!("| {what} |"));
        for cell in cells {
            match cell {
                Some(us) => rows.push_str(&format!(" {us:.1} µs |")),
                None => rows.push_str(" |"),
            }
        }
        rows.push('\n');
    }
    let shares = std::fs::read_to_string(run.join("profile.txt"))
        .map(|report| categorise(&report))
        .unwrap_or_default();
    if rows.is_empty() && shares.is_empty() {
        return None;
    }
    let mut out = String::from("\n## Where the time goes\n\n");
    if !rows.is_empty() {
        out.push_str(
            "CPU time each native contender used per request (its processes' user and system \
             time over the run, from `/proc`, divided by the requests it served). The load \
             generator, the origin and the contender share this machine's cores, so CPU per \
             request is what decides requests per second, and it is steadier than requests per \
             second when something else runs meanwhile.\n\n| case |",
        );
        for c in contenders {
            out.push_str(&format!(" {c} |"));
        }
        out.push_str("\n|---|");
        out.push_str(&"---:|".repeat(contenders.len()));
        out.push('\n');
        out.push_str(&rows);
    }
    if !shares.is_empty() {
        out.push_str(
            "\nThe native gateway's profile on the HS256 cached case (`perf record` on its \
             process during a separate 8 s run, each sample counted by the function it was \
             in):\n\n| spent in | share of samples |\n|---|---:|\n",
        );
        for (name, share) in shares {
            out.push_str(&format!("| {name} | {share:.1}% |\n"));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_lines_are_sorted_into_categories() {
        let report = "\
# Samples: 5K of event 'cpu-clock:ppp'
     5.89%  [kernel.kallsyms]  [k] _raw_spin_unlock_irqrestore     -      -
     5.45%  libc.so.6          [.] __memmove_avx_unaligned_erms     -      -
     3.20%  libc.so.6          [.] _int_malloc
     2.00%  portcullis         [.] mi_free
     1.00%  portcullis         [.] portcullis_core::forward::build
     0.50%  portcullis         [.] <hyper::proto::h1::role::Server as hyper::proto::h1::Http1Transaction>::encode
     0.25%  portcullis         [.] tokio::task::local::LocalSet::tick
     0.20%  [vdso]             [.] __vdso_clock_gettime
     0.10%  portcullis         [.] something_unknown
";
        let shares = categorise(report);
        let share = |name: &str| {
            shares
                .iter()
                .find(|(n, _)| n.starts_with(name))
                .map(|(_, s)| (s * 100.0).round() / 100.0)
        };
        assert_eq!(share("kernel"), Some(5.89));
        assert_eq!(share("memory allocator"), Some(5.2));
        assert_eq!(share("memory copies"), Some(5.45));
        assert_eq!(share("policy decision"), Some(1.0));
        assert_eq!(share("HTTP/1"), Some(0.5));
        assert_eq!(share("async runtime"), Some(0.25));
        assert_eq!(share("clock"), Some(0.2));
        assert_eq!(shares.last().map(|(n, _)| *n), Some("everything else"));
        assert_eq!(shares[0].0, "kernel: TCP/IP, system calls, scheduling");
    }

    #[test]
    fn no_figures_no_section_and_cpu_per_request_from_the_run_files() {
        let dir = std::env::temp_dir().join(format!("portcullis-profile-{}", std::process::id()));
        let results = dir.join("results");
        std::fs::create_dir_all(&results).unwrap();
        let cases = [("public", "public route"), ("body", "JSON body")];
        assert_eq!(section(&dir, &cases, &["haproxy", "portcullis"]), None);
        std::fs::write(results.join("haproxy__public.cpu"), "2340000 0\n").unwrap();
        std::fs::write(
            results.join("haproxy__public.wrk.json"),
            "Running 10s test\n{\"requests\":100000,\"p50_us\":1}\n",
        )
        .unwrap();
        let text = section(&dir, &cases, &["haproxy", "portcullis"]).unwrap();
        assert!(text.contains("| public route | 23.4 µs | |"), "{text}");
        assert!(!text.contains("JSON body"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
