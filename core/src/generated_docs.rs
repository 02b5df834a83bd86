//! Test support: tables in the docs that are rendered from the code (reasons, forwarded-header
//! classes, event kinds), so the docs cannot drift from what the gateway does. Each lives between
//! `<!-- NAME:start -->` and `<!-- NAME:end -->` in its document; a test compares, and
//! `PORTCULLIS_BLESS=1` rewrites the section instead.

/// `doc` with the section `name` replaced by `table`; `None` when its markers are missing or out
/// of order.
pub(crate) fn rendered(doc: &str, name: &str, table: &str) -> Option<String> {
    let (start, end) = (
        format!("<!-- {name}:start -->\n"),
        format!("<!-- {name}:end -->"),
    );
    let from = doc.find(&start)? + start.len();
    let to = from + doc[from..].find(&end)?;
    Some(format!("{}{table}{}", &doc[..from], &doc[to..]))
}

/// Fail unless the section `name` of the document at `path` (relative to the repository root)
/// is `table`, or rewrite it with `PORTCULLIS_BLESS=1`. `test` names the test to run then.
pub(crate) fn check(path: &str, name: &str, table: &str, test: &str) {
    let file = format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{path}: {e}"));
    let want = rendered(&doc, name, table).unwrap_or_else(|| {
        panic!("{path} has no `<!-- {name}:start -->` … `<!-- {name}:end -->` section")
    });
    if want == doc {
        return;
    }
    if std::env::var_os("PORTCULLIS_BLESS").is_some() {
        std::fs::write(&file, want).unwrap_or_else(|e| panic!("{path}: {e}"));
        return;
    }
    panic!(
        "{path}'s {name} table differs from the code. Regenerate it with \
         `PORTCULLIS_BLESS=1 cargo test -p portcullis-core {test}`."
    );
}

#[cfg(test)]
mod tests {
    use super::rendered;

    #[test]
    fn rendering_replaces_only_the_marked_section() {
        let (start, end) = ("<!-- t:start -->\n", "<!-- t:end -->");
        let doc = format!("before\n{start}stale\n{end}\nafter\n");
        let out = rendered(&doc, "t", "| new |\n").unwrap();
        assert_eq!(out, format!("before\n{start}| new |\n{end}\nafter\n"));
        assert_eq!(rendered("no markers", "t", ""), None);
        assert_eq!(
            rendered(&format!("{end}\n{start}"), "t", ""),
            None,
            "out of order"
        );
    }
}
