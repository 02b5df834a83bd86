//! Named entries (`origins`, `auth`, `quotas`) and the references routes make to them.
//!
//! A name is declared once, in its section, and may be referenced by any route. An entry that is
//! declared but invalid still counts as declared: a route naming it is not reported again, since
//! the entry's own problems already are, and "no origin named" would send the reader looking for
//! a typo that is not there.

use std::collections::HashMap;

use super::super::ConfigErrorKind;
use super::reader::{ptr, Json, Named, Reader};

/// Every declared name of one kind; `None` marks an entry that is declared but invalid.
pub(super) type Declared = HashMap<String, Option<usize>>;

/// The names routes may refer to.
pub(super) struct Names {
    pub(super) origins: Declared,
    pub(super) providers: Declared,
    pub(super) quotas: Declared,
}

/// A reference: `Ok(Some(i))` valid, `Ok(None)` declared but invalid, `Err` not declared.
pub(super) fn resolve(declared: &Declared, name: &str) -> Result<Option<usize>, ()> {
    declared.get(name).copied().ok_or(())
}

/// Read an object of named entries at `at` in document order; an entry with a malformed name is
/// reported and not read further.
pub(super) fn read_named<T, U>(
    r: &mut Reader,
    section: Json<Named<T>>,
    at: &str,
    mut each: impl FnMut(&mut Reader, &str, T, &str) -> Option<U>,
) -> Vec<(String, Option<U>)> {
    let Json::Ok(Named(entries)) = section else {
        r.err(
            at,
            ConfigErrorKind::WrongType {
                expected: "an object of named entries",
            },
        );
        return Vec::new();
    };
    let mut out = Vec::with_capacity(entries.len());
    for (name, entry) in entries {
        let here = ptr(at, &name);
        if !valid_name(&name) {
            r.invalid(
                &here,
                "names use letters, digits, '-', '_' and '.' only (1 to 64 characters)",
            );
            out.push((name, None));
            continue;
        }
        let read = each(r, &name, entry, &here);
        out.push((name, read));
    }
    out
}

/// Keep the valid entries, and index every declared name.
pub(super) fn split<T>(entries: Vec<(String, Option<T>)>) -> (Vec<T>, Declared) {
    let mut valid = Vec::with_capacity(entries.len());
    let mut names = HashMap::with_capacity(entries.len());
    for (name, entry) in entries {
        let index = entry.map(|t| {
            valid.push(t);
            valid.len() - 1
        });
        names.insert(name, index);
    }
    (valid, names)
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}
