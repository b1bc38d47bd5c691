//! The policy in force, re-read when its file changes.
//!
//! The policy usually comes from a ConfigMap volume, which the kubelet updates by swapping the
//! `..data` symlink: watching the file itself misses that. As for the serving certificate
//! (`server::tls`), the file is re-read by path at a short interval and compared by content. A
//! new policy that does not parse or check is refused with the offending key logged, and the
//! old one stays in force.
//!
//! Each decision takes the policy in force at its start (a clone of an `Arc` under a read lock
//! that is only written to swap that pointer), so decisions never wait on a reload and one
//! decision never sees two policies.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::policy::{Policy, PolicyError};

/// A policy with where and when it was loaded, as `/report` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct InForce {
    #[serde(skip)]
    pub policy: Arc<Policy>,
    /// The policy file, `None` for the built-in defaults.
    pub file: Option<PathBuf>,
    /// SHA-256 of the file's bytes in hex, as `sha256sum` prints it; `None` for the built-in
    /// defaults.
    pub sha256: Option<String>,
    /// Seconds since the Unix epoch when this policy was put in force.
    #[serde(rename = "loadedAt")]
    pub loaded_at: u64,
}

/// The policy in force, swapped whole when its file changes.
#[derive(Debug)]
pub struct LivePolicy {
    current: RwLock<Arc<InForce>>,
    /// The last bytes read (used or refused), so each change is judged and logged once.
    seen: Mutex<Option<Vec<u8>>>,
    /// The last read error, so a file that stays unreadable is logged once.
    last_read_error: Mutex<Option<String>>,
}

/// What one look at the policy file found.
#[derive(Debug)]
pub enum Reload {
    /// The file is as it was.
    Unchanged,
    /// A new policy is in force.
    Loaded(Arc<InForce>),
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn read(path: &Path) -> Result<Vec<u8>, PolicyError> {
    std::fs::read(path)
        .map_err(|e| PolicyError::Io { file: path.display().to_string(), source: std::sync::Arc::new(e) })
}

fn parse(bytes: &[u8], path: &Path) -> Result<Policy, PolicyError> {
    let file = path.display().to_string();
    let text = std::str::from_utf8(bytes)
        .map_err(|e| PolicyError::Yaml { file: file.clone(), message: format!("not UTF-8: {e}") })?;
    Policy::parse(text, &file)
}

impl LivePolicy {
    /// A policy that never changes: the built-in defaults or one built in code.
    pub fn fixed(policy: Arc<Policy>) -> Arc<LivePolicy> {
        Arc::new(LivePolicy {
            current: RwLock::new(Arc::new(InForce { policy, file: None, sha256: None, loaded_at: now_secs() })),
            seen: Mutex::new(None),
            last_read_error: Mutex::new(None),
        })
    }

    /// Reads the policy file; a policy that cannot be used at start-up is an error.
    pub fn load(path: &Path) -> Result<Arc<LivePolicy>, PolicyError> {
        let bytes = read(path)?;
        let policy = parse(&bytes, path)?;
        let in_force = InForce {
            policy: Arc::new(policy),
            file: Some(path.to_path_buf()),
            sha256: Some(sha256_hex(&bytes)),
            loaded_at: now_secs(),
        };
        Ok(Arc::new(LivePolicy {
            current: RwLock::new(Arc::new(in_force)),
            seen: Mutex::new(Some(bytes)),
            last_read_error: Mutex::new(None),
        }))
    }

    /// The policy for one decision.
    pub fn get(&self) -> Arc<Policy> {
        self.in_force().policy.clone()
    }

    /// The policy in force with its file, hash and load time.
    pub fn in_force(&self) -> Arc<InForce> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads the file and puts a changed, valid policy in force. A changed policy that
    /// cannot be used is an error, reported once; the old policy stays in force. A fixed
    /// policy is always unchanged.
    pub fn reload(&self) -> Result<Reload, PolicyError> {
        let Some(path) = self.in_force().file.clone() else { return Ok(Reload::Unchanged) };
        let bytes = match read(&path) {
            Ok(b) => {
                *self.last_read_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                b
            }
            Err(e) => {
                let mut last = self.last_read_error.lock().unwrap_or_else(|p| p.into_inner());
                let message = e.to_string();
                if last.as_deref() == Some(message.as_str()) {
                    return Ok(Reload::Unchanged);
                }
                *last = Some(message);
                return Err(e);
            }
        };
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.as_deref() == Some(bytes.as_slice()) {
                return Ok(Reload::Unchanged);
            }
            // Remember the bytes either way, so a broken policy is reported once, not every poll.
            *seen = Some(bytes.clone());
        }
        let policy = parse(&bytes, &path)?;
        let in_force = Arc::new(InForce {
            policy: Arc::new(policy),
            file: Some(path),
            sha256: Some(sha256_hex(&bytes)),
            loaded_at: now_secs(),
        });
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = in_force.clone();
        Ok(Reload::Loaded(in_force))
    }

    /// Polls the file every `every` until the process ends; `counted` is told the result of
    /// every reload that changed something or failed (`true`: a new policy is in force).
    pub fn spawn_watch(
        self: &Arc<Self>,
        every: Duration,
        counted: impl Fn(bool) + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match this.reload() {
                    Ok(Reload::Unchanged) => {}
                    Ok(Reload::Loaded(p)) => {
                        counted(true);
                        tracing::info!(
                            file = %p.file.as_deref().unwrap_or(Path::new("")).display(),
                            sha256 = p.sha256.as_deref().unwrap_or_default(),
                            "policy reloaded"
                        );
                    }
                    Err(e) => {
                        counted(false);
                        tracing::error!(error = %e, "new policy refused; the previous one stays in force");
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Action, Rule};

    #[test]
    fn a_changed_file_is_put_in_force_and_a_broken_one_is_refused_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, "rules: { cycle: deny }\n").unwrap();
        let live = LivePolicy::load(&path).unwrap();
        let first = live.in_force();
        assert_eq!(first.sha256.as_deref().map(str::len), Some(64));
        assert!(matches!(live.reload(), Ok(Reload::Unchanged)));

        std::fs::write(&path, "rules: { cycle: warn }\n").unwrap();
        assert!(matches!(live.reload(), Ok(Reload::Loaded(_))));
        assert_eq!(live.get().action(Rule::Cycle), Action::Warn);
        assert_ne!(live.in_force().sha256, first.sha256);

        std::fs::write(&path, "rules: { cycle: block }\n").unwrap();
        let err = live.reload().unwrap_err().to_string();
        assert!(err.contains("rules.cycle"), "the error names the key: {err}");
        assert_eq!(live.get().action(Rule::Cycle), Action::Warn, "the old policy stays in force");
        assert!(matches!(live.reload(), Ok(Reload::Unchanged)), "a broken file is reported once");

        std::fs::write(&path, "defaults: { helmRelease: { install: { crds: Always } } }\n").unwrap();
        let err = live.reload().unwrap_err().to_string();
        assert!(err.contains("defaults.helmRelease.install.crds"), "a default the CRD rejects is refused: {err}");
        assert_eq!(live.get().action(Rule::Cycle), Action::Warn);

        std::fs::remove_file(&path).unwrap();
        assert!(live.reload().is_err());
        assert!(matches!(live.reload(), Ok(Reload::Unchanged)), "a missing file is reported once");
        assert_eq!(live.get().action(Rule::Cycle), Action::Warn);
    }

    #[test]
    fn the_hash_is_the_sha256_of_the_file() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
