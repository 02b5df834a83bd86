//! When to read the policy file again: on `SIGHUP`, and, when watched, whenever the file changes.
//!
//! What a reload does (keep the last good policy, start up a new one's key sets) is the core's
//! policy store; this module only says when. A watched file is looked at every
//! [`WATCH_INTERVAL`] by what names its content: the inode and device of the file the path
//! resolves to, its size and its modification time. So an edit in place, an editor's
//! write-and-rename and a Kubernetes config map's symlink swap are all seen, with no inotify
//! and no missed events when the watched directory itself is replaced.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;

/// How often a watched file is looked at.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// The reload thread, stopped when this is dropped.
#[derive(Debug)]
pub struct Reloader {
    _stop: oneshot::Sender<()>,
}

/// What identifies a file's content without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    inode: (u64, u64),
    len: u64,
    modified: Option<SystemTime>,
}

fn stamp(path: &PathBuf) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = {
        use std::os::unix::fs::MetadataExt;
        (meta.dev(), meta.ino())
    };
    #[cfg(not(unix))]
    let inode = (0, 0);
    Some(Stamp {
        inode,
        len: meta.len(),
        modified: meta.modified().ok(),
    })
}

/// Read `file` and hand its text (or why it could not be read) to `reload` on every `SIGHUP`,
/// and also whenever the file changes if `watch`, one reload at a time, on a thread of its own
/// with a single-threaded runtime: the core's futures are not `Send`, so they cannot run on the
/// serving threads' scheduler. `SIGHUP` is listened for before this returns, so one sent right
/// after the readiness line reloads instead of ending the process (its default).
pub fn spawn<F, R>(file: PathBuf, watch: bool, mut reload: F) -> Result<Reloader, String>
where
    F: FnMut(Result<String, String>) -> R + Send + 'static,
    R: Future,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the reload thread's runtime: {e}"))?;
    #[cfg(unix)]
    let mut hangup = {
        let _entered = runtime.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| format!("cannot listen for SIGHUP: {e}"))?
    };
    let (stop, mut stopped) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("portcullis-reload".into())
        .spawn(move || {
            runtime.block_on(async move {
                let mut seen = stamp(&file);
                let mut tick = tokio::time::interval(WATCH_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    #[cfg(unix)]
                    let hup = hangup.recv();
                    #[cfg(not(unix))]
                    let hup = std::future::pending::<Option<()>>();
                    tokio::select! {
                        _ = &mut stopped => return,
                        _ = hup => {}
                        _ = tick.tick(), if watch => {
                            if stamp(&file) == seen {
                                continue;
                            }
                        }
                    }
                    // Stamped before reading: a change made while reloading is seen next time.
                    seen = stamp(&file);
                    let read = std::fs::read_to_string(&file)
                        .map_err(|e| format!("cannot read {}: {e}", file.display()));
                    reload(read).await;
                }
            });
        })
        .map_err(|e| format!("cannot start the reload thread: {e}"))?;
    Ok(Reloader { _stop: stop })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rename_over_the_file_is_a_change_even_with_the_same_size_and_time() {
        let dir = std::env::temp_dir().join(format!("portcullis-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("policy.json");
        std::fs::write(&file, "{\"a\": 1}").expect("write");
        let before = stamp(&file).expect("stamp");
        let next = dir.join("policy.json.new");
        std::fs::write(&next, "{\"a\": 2}").expect("write");
        let modified = std::fs::metadata(&file)
            .and_then(|m| m.modified())
            .expect("mtime");
        let handle = std::fs::File::options()
            .write(true)
            .open(&next)
            .expect("open");
        handle.set_modified(modified).expect("set mtime");
        std::fs::rename(&next, &file).expect("rename");
        let after = stamp(&file).expect("stamp");
        assert_eq!((before.len, before.modified), (after.len, after.modified));
        assert_ne!(before, after, "a new inode is a new file");
        assert_eq!(stamp(&dir.join("missing")), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
