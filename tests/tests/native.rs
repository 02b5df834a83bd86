//! The conformance vectors and config fixtures against the native `portcullis` binary.
//!
//! The binary is `$PORTCULLIS_BIN` if set, else built with `cargo build -p portcullis` in the
//! profile of this test. Expected failures are listed, with reasons, in `tests/xfail/native.json`.
//! Vector files run one at a time (timing cases need a quiet machine), each against a fresh
//! gateway.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use portcullis_conformance::runner::{self, XFail};
use portcullis_conformance::target::{self, NativeTarget, LISTENING_PREFIX};
use portcullis_conformance::{suite_dir, vector, vectors_dir};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn binary() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BIN.get_or_init(|| target::locate_native_binary().map_err(|e| format!("{e:#}"))) {
        Ok(p) => p.clone(),
        Err(e) => panic!("cannot get the portcullis binary: {e}"),
    }
}

fn xfail() -> XFail {
    XFail::load(&suite_dir().join("xfail").join("native.json"))
        .expect("tests/xfail/native.json is valid")
}

fn run_vector(stem: &str) {
    let _guard = serial();
    let mut native = NativeTarget::new(binary()).expect("temp dir");
    let file = vectors_dir().join(format!("{stem}.json"));
    let xfail = xfail();
    let reports = runner::run_files(&mut native, &[file], &xfail, "127.0.0.1:0").expect("runner");
    let report = &reports[0];
    let known: Vec<String> = report
        .cases
        .iter()
        .map(|c| format!("{stem}/{}", c.name))
        .collect();
    let stale: Vec<&str> = xfail
        .unused(&known)
        .into_iter()
        .filter(|entry| entry.starts_with(&format!("{stem}/")))
        .collect();
    assert!(
        stale.is_empty(),
        "xfail entries that name no case (remove them): {stale:?}"
    );
    let summary = report.summary();
    println!("{}", summary.line());
    assert_eq!(
        summary.failed, 0,
        "{stem}: {} case(s) failed; see the report above",
        summary.failed
    );
}

macro_rules! vector_tests {
    ($($test:ident => $stem:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                run_vector($stem);
            }
        )*
        const STEMS: &[&str] = &[$($stem),*];
    };
}

vector_tests! {
    vectors_routing => "routing",
    vectors_path => "path",
    vectors_jwt => "jwt",
    vectors_api_key => "api_key",
    vectors_credentials => "credentials",
    vectors_cors => "cors",
    vectors_authz => "authz",
    vectors_body => "body",
    vectors_query => "query",
    vectors_ambiguity => "ambiguity",
    vectors_quota => "quota",
    vectors_headers => "headers",
    vectors_forwarding => "forwarding",
    vectors_forward_headers => "forward_headers",
    vectors_client_ip => "client_ip",
    vectors_client_ip_untrusted => "client_ip_untrusted",
    vectors_ip_rules => "ip_rules",
    vectors_lockout => "lockout",
    vectors_origin => "origin",
    vectors_origin_signing => "origin_signing",
    vectors_problem => "problem",
    vectors_robustness => "robustness",
    vectors_remote_keys => "remote_keys",
    vectors_remote_keys_flood => "remote_keys_flood",
    vectors_remote_keys_unavailable => "remote_keys_unavailable",
    vectors_remote_keys_oidc => "remote_keys_oidc",
    vectors_remote_keys_oidc_wrong_issuer => "remote_keys_oidc_wrong_issuer",
    vectors_no_policy => "no_policy",
    vectors_outside_decision => "outside_decision",
}

/// The listener's certificate (for 127.0.0.1, from a CA made here): `[cert, key, ca]`.
fn listener_certificate() -> [PathBuf; 3] {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let dir = std::env::temp_dir().join(format!("portcullis-h2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("certificate directory");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("CA");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("certificate");
    let files = [
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("ca.pem"),
    ];
    for (file, pem) in files
        .iter()
        .zip([cert.pem(), key.serialize_pem(), ca.pem()])
    {
        std::fs::write(file, pem).expect("write PEM");
    }
    files
}

/// Every vector file against `serve --tls-cert --tls-key`, every request sent as HTTP/2: the
/// decisions must not depend on the protocol. What HTTP/2 cannot express (HTTP/1.1 framing,
/// `Connection`) is listed with reasons in `tests/xfail/native-h2.json`.
#[test]
fn vectors_over_http2() {
    let _guard = serial();
    let [cert, key, ca] = listener_certificate();
    let mut native = NativeTarget::new(binary())
        .expect("temp dir")
        .with_tls(cert, key, ca);
    let xfail = XFail::load(&suite_dir().join("xfail").join("native-h2.json"))
        .expect("tests/xfail/native-h2.json is valid");
    let files: Vec<PathBuf> = STEMS
        .iter()
        .map(|stem| vectors_dir().join(format!("{stem}.json")))
        .collect();
    let reports = runner::run_files(&mut native, &files, &xfail, "127.0.0.1:0").expect("runner");
    let mut known = Vec::new();
    let mut failed = Vec::new();
    for (stem, report) in STEMS.iter().zip(&reports) {
        known.extend(report.cases.iter().map(|c| format!("{stem}/{}", c.name)));
        let summary = report.summary();
        println!("{stem}: {}", summary.line());
        if summary.failed > 0 {
            failed.push(*stem);
        }
    }
    let stale = xfail.unused(&known);
    assert!(
        stale.is_empty(),
        "xfail entries that name no case: {stale:?}"
    );
    assert!(
        failed.is_empty(),
        "over HTTP/2, cases failed in: {failed:?}"
    );
}

#[test]
fn every_vector_file_has_a_test() {
    let files = vector::vector_files(&vectors_dir()).expect("vectors dir");
    for f in &files {
        let stem = f.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        assert!(
            STEMS.contains(&stem),
            "vector file {stem}.json has no test in tests/native.rs"
        );
        vector::VectorFile::load(f).unwrap_or_else(|e| panic!("{e:#}"));
    }
}

/// Environment for `check`/`serve` on the config fixtures.
fn config_env(command: &mut Command) {
    command
        .env(
            "TEST_HS_SECRET",
            "TEST-ONLY-hs256-secret-wTl7-TjufQzbMiiBne8t78C2ZRxaOq8g",
        )
        .env("TEST_SHORT_SECRET", "short")
        .env_remove("TEST_UNSET_SECRET");
}

/// The fixture with `${jwk:...}`-free text (mint fills them); written as is.
fn check(file: &Path) -> (Option<i32>, String) {
    let mut command = Command::new(binary());
    command.arg("check").arg(file).stdin(Stdio::null());
    config_env(&mut command);
    let out = command.output().expect("running portcullis check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// `portcullis serve --config FILE`: Ok(exit code) if it exits within 10 s without listening.
fn serve_refuses(file: &Path) -> Result<i32, String> {
    let mut command = Command::new(binary());
    command
        .arg("serve")
        .arg("--config")
        .arg(file)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    config_env(&mut command);
    let mut child = command.spawn().map_err(|e| e.to_string())?;
    let stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut listened = false;
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            listened |= line.starts_with(LISTENING_PREFIX);
            lines.push(line);
        }
        (listened, lines)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("still running after 10 s (it should refuse the config and exit)".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (listened, lines) = reader
        .join()
        .map_err(|_| "stderr reader panicked".to_owned())?;
    if listened {
        return Err(format!(
            "printed a listening line before exiting: {lines:?}"
        ));
    }
    match status.code() {
        Some(0) => Err("exited 0".into()),
        Some(code) => Ok(code),
        None => Err("killed by a signal".into()),
    }
}

/// `pointer` occurs in `text` as a whole pointer (not as the prefix of a longer one).
fn mentions_pointer(text: &str, pointer: &str) -> bool {
    text.match_indices(pointer).any(|(i, _)| {
        let next = text[i + pointer.len()..].chars().next();
        !matches!(next, Some(c) if c == '/' || c == '~' || c.is_alphanumeric() || c == '-' || c == '_' || c == '.')
    })
}

#[test]
fn invalid_configs_are_rejected_with_pointers() {
    let _guard = serial();
    let dir = suite_dir().join("configs").join("invalid");
    let expected: BTreeMap<String, Vec<String>> = serde_json::from_str(
        &std::fs::read_to_string(dir.join("expected.json")).expect("expected.json"),
    )
    .expect("expected.json maps file names to pointer lists");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("configs/invalid")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json") && n != "expected.json")
        .collect();
    files.sort();
    let xfail = xfail();
    let mut failures = Vec::new();
    let mut xfailed = Vec::new();
    for name in &files {
        let before = failures.len();
        let Some(pointers) = expected.get(name) else {
            failures.push(format!("{name}: not listed in expected.json"));
            continue;
        };
        let path = dir.join(name);
        let (code, text) = check(&path);
        if code != Some(1) {
            failures.push(format!(
                "{name}: `portcullis check` exited {code:?}, expected 1; output:\n{text}"
            ));
        }
        for p in pointers.iter().filter(|p| !p.is_empty()) {
            if !mentions_pointer(&text, p) {
                failures.push(format!(
                    "{name}: `portcullis check` output does not name {p:?}; output:\n{text}"
                ));
            }
        }
        if let Err(e) = serve_refuses(&path) {
            failures.push(format!("{name}: `portcullis serve`: {e}"));
        }
        match (xfail.reason("configs", name), failures.len() > before) {
            (None, false) => println!("  PASS  {name}"),
            (None, true) => println!("  FAIL  {name}"),
            (Some(reason), true) => {
                println!("  XFAIL {name} (expected: {reason})");
                for f in failures.drain(before..) {
                    println!("        - {f}");
                }
                xfailed.push(name.clone());
            }
            (Some(reason), false) => {
                println!("  XPASS {name} (listed as expected failure: {reason}; remove it from the list)");
                failures.push(format!(
                    "{name}: passes, but tests/xfail/native.json lists it as an expected failure"
                ));
            }
        }
    }
    for name in expected.keys() {
        if !files.contains(name) {
            failures.push(format!("expected.json lists {name}, which does not exist"));
        }
    }
    let failed = failures
        .iter()
        .map(|f| f.split(':').next().unwrap_or(""))
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let passed = files.len().saturating_sub(failed + xfailed.len());
    println!(
        "invalid configs: {passed} passed, {failed} failed, {} expected failures",
        xfailed.len()
    );
    assert!(
        failures.is_empty(),
        "invalid config fixtures:\n{}",
        failures.join("\n")
    );
}

#[test]
fn valid_configs_are_accepted() {
    let _guard = serial();
    let dir = suite_dir().join("configs").join("valid");
    let mut failures = Vec::new();
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("configs/valid") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        count += 1;
        let (code, text) = check(&path);
        if code != Some(0) {
            failures.push(format!(
                "{}: `portcullis check` exited {code:?}, expected 0; output:\n{text}",
                path.display()
            ));
        }
    }
    assert!(count > 0, "no valid config fixtures");
    assert!(
        failures.is_empty(),
        "valid config fixtures:\n{}",
        failures.join("\n")
    );
}

/// A valid policy with things that likely do not do what was meant: `check` still accepts it,
/// and names each with its pointer after the ok line.
#[test]
fn check_prints_warnings_and_still_accepts() {
    let _guard = serial();
    let file = suite_dir()
        .join("configs")
        .join("valid")
        .join("warnings.json");
    let (code, text) = check(&file);
    assert_eq!(code, Some(0), "{text}");
    let warned: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(": warning: "))
        .filter_map(|l| l.split(": ").nth(1))
        .collect();
    assert_eq!(
        warned,
        [
            "/forward_headers/allow/3",
            "/routes/0/quota",
            "/routes/1/forward_headers/allow/1"
        ],
        "{text}"
    );
    assert!(
        text.contains("\"x-client-id\", which the client chooses"),
        "{text}"
    );
}

/// The latency measurement the edge targets report (`portcullis_conformance::latency`), run
/// against the native gateway with few requests: it checks that every case gets its 200 (a
/// signature or policy problem in the measuring setup would otherwise only show on the edge).
/// The figures are printed, not judged: speed is measured in benchmarks, not asserted in tests.
#[test]
fn latency_measurement_cases_are_admitted() {
    let _guard = serial();
    let mut native = NativeTarget::new(binary()).expect("temp dir");
    let (figures, table) =
        portcullis_conformance::latency::run_standard(&mut native, 2, 20).expect("measure");
    println!("{table}");
    assert_eq!(figures.len(), 6);
    assert!(figures.iter().all(|f| f.requests == 20));
}
