//! Reaping orphans without stealing our own children's exit status.
//!
//! As PID 1 the agent inherits every orphaned process and must reap it, or zombies pile
//! up. A blind `waitpid(-1)` would also reap the children the agent itself runs (mkfs,
//! resize2fs ...) before their owner waits for them. So children the agent starts are
//! registered in [`Children`] (use [`spawn`]); the reaper finds zombies in /proc whose
//! parent is us and reaps only the unregistered ones. Spawning and scanning hold the same
//! lock, so a child is always registered before the reaper can see it.

use std::collections::HashSet;
use std::process::{Child, Command};
use std::sync::Mutex;

static OWNED: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

fn with_owned<T>(f: impl FnOnce(&mut HashSet<i32>) -> T) -> T {
    let mut guard = OWNED.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(HashSet::new))
}

/// A child the agent started and will wait for itself.
pub struct Owned {
    pid: i32,
    child: Option<Child>,
}

impl Owned {
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits for the child; it stays registered until this `Owned` is dropped.
    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match self.child.as_mut() {
            Some(c) => c.wait(),
            None => Err(std::io::Error::other("child already collected")),
        }
    }

    /// Waits and collects output (stdout/stderr must have been piped).
    pub fn wait_with_output(mut self) -> std::io::Result<std::process::Output> {
        match self.child.take() {
            Some(c) => c.wait_with_output(),
            None => Err(std::io::Error::other("child already collected")),
        }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        with_owned(|s| s.remove(&self.pid));
    }
}

/// Starts a command as a registered child, so the reaper leaves it to its owner.
pub fn spawn(cmd: &mut Command) -> std::io::Result<Owned> {
    with_owned(|owned| {
        let child = cmd.spawn()?;
        let pid = child.id() as i32;
        owned.insert(pid);
        Ok(Owned {
            pid,
            child: Some(child),
        })
    })
}

/// Runs a command to completion as a registered child and collects its output.
pub fn output(cmd: &mut Command) -> std::io::Result<std::process::Output> {
    use std::process::Stdio;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    spawn(cmd)?.wait_with_output()
}

/// Parses `/proc/<pid>/stat`: returns (state, ppid). The command name may hold spaces
/// and parentheses, so fields are counted after the last `)`.
pub fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Reaps every zombie child of ours that nobody owns. Returns (pid, status text).
pub fn reap_orphans() -> Vec<(i32, String)> {
    let me = rustix::process::getpid().as_raw_nonzero().get();
    let mut reaped = Vec::new();
    with_owned(|owned| {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if owned.contains(&pid) {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            if parse_stat(&stat) != Some(('Z', me)) {
                continue;
            }
            let Some(p) = rustix::process::Pid::from_raw(pid) else {
                continue;
            };
            if let Ok(Some((_, status))) =
                rustix::process::waitpid(Some(p), rustix::process::WaitOptions::NOHANG)
            {
                reaped.push((pid, describe(status)));
            }
        }
    });
    reaped
}

fn describe(status: rustix::process::WaitStatus) -> String {
    if let Some(code) = status.exit_status() {
        format!("exit {code}")
    } else if let Some(sig) = status.terminating_signal() {
        format!("killed by signal {sig}")
    } else {
        "stopped".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines() {
        let cases = [
            ("1 (init) S 0 1 1 0 -1", Some(('S', 0))),
            ("42 (mk fs) (x)) Z 1 42 42", Some(('Z', 1))),
            ("7 (a) R 3", Some(('R', 3))),
            ("garbage", None),
            ("8 (a) Z", None),
        ];
        for (line, want) in cases {
            assert_eq!(parse_stat(line), want, "{line}");
        }
    }

    #[test]
    fn owned_children_are_registered_and_released() {
        let out = output(Command::new("sh").args(["-c", "echo hi; echo err >&2; exit 3"])).unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"hi\n");
        assert_eq!(out.stderr, b"err\n");
        let owned = spawn(&mut Command::new("true")).unwrap();
        let pid = owned.pid();
        assert!(with_owned(|s| s.contains(&pid)));
        drop(owned);
        assert!(!with_owned(|s| s.contains(&pid)));
    }

    #[test]
    fn reaper_leaves_owned_children_alone() {
        let mut owned = spawn(&mut Command::new("true")).unwrap();
        // Let it exit and become a zombie, then run the reaper: it must not take it.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let reaped = reap_orphans();
        let pid = owned.pid();
        assert!(!reaped.iter().any(|(p, _)| *p == pid));
        assert!(owned.wait().unwrap().success());
    }
}
