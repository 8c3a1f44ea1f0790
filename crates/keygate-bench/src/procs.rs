//! The processes under test: started (pinned to a core with `taskset` when asked), waited
//! for, measured through `/proc` (CPU time and memory of the whole process tree), and
//! killed when dropped.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A child process, killed on drop; its output goes to a log file.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub pid: u32,
    pub log: PathBuf,
    child: tokio::process::Child,
}

/// How to start one process.
#[derive(Debug)]
pub struct Spawn<'a> {
    pub name: &'a str,
    pub program: &'a Path,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Pin to this CPU (with `taskset`); `None`: inherit the harness's affinity.
    pub core: Option<usize>,
    pub log_dir: &'a Path,
}

impl Spawn<'_> {
    pub fn start(self) -> anyhow::Result<Proc> {
        let log = self.log_dir.join(format!("{}.log", self.name));
        let file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = match self.core {
            Some(core) => {
                let mut c = tokio::process::Command::new("taskset");
                c.arg("-c").arg(core.to_string()).arg(self.program);
                c
            }
            None => tokio::process::Command::new(self.program),
        };
        for (name, _) in std::env::vars() {
            if name.starts_with("KEYGATE_") {
                cmd.env_remove(name);
            }
        }
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("starting {}", self.program.display()))?;
        let pid = child.id().context("the child has no pid")?;
        Ok(Proc { name: self.name.to_owned(), pid, log, child })
    }
}

impl Proc {
    /// Polls `url` until it answers 2xx, the process exits, or `limit` passes.
    pub async fn wait_ready(&mut self, url: &str, limit: Duration) -> anyhow::Result<()> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited ({status}) before it was ready; see {}", self.name, self.log.display());
            }
            if http.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} was not ready at {url} within {limit:?}; see {}", self.name, self.log.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// CPU time (user + system) used so far by the process and its descendants.
    pub fn cpu(&self) -> Duration {
        tree(self.pid).iter().map(|pid| cpu_of(*pid)).sum()
    }

    /// Resident memory now, in MiB, summed over the process tree.
    pub fn rss_mib(&self) -> f64 {
        tree(self.pid).iter().map(|pid| status_kib(*pid, "VmRSS:")).sum::<u64>() as f64 / 1024.0
    }

    /// Peak resident memory so far, in MiB, summed over the process tree.
    pub fn peak_rss_mib(&self) -> f64 {
        tree(self.pid).iter().map(|pid| status_kib(*pid, "VmHWM:")).sum::<u64>() as f64 / 1024.0
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Samples a process's RSS every 50 ms until told to stop; answers the highest seen.
pub fn sample_rss(pid: u32) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<f64>) {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        let mut peak: f64 = 0.0;
        loop {
            let rss = tree(pid).iter().map(|p| status_kib(*p, "VmRSS:")).sum::<u64>() as f64 / 1024.0;
            peak = peak.max(rss);
            tokio::select! {
                _ = &mut stopped => return peak,
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    });
    (stop, handle)
}

/// `pid` and every process descended from it.
fn tree(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(p) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            if let Some(ppid) = stat_fields(p).and_then(|f| f.get(1).and_then(|v| v.parse().ok())) {
                parents.push((p, ppid));
            }
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parents.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    found
}

/// The fields of `/proc/<pid>/stat` after the command name: state, ppid, ...
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn cpu_of(pid: u32) -> Duration {
    // utime and stime are fields 14 and 15 of stat, counted in clock ticks (100 per second
    // on Linux, whatever the kernel's HZ).
    let ticks = stat_fields(pid)
        .map(|f| {
            f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
                + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix(field).and_then(|v| v.split_whitespace().next()?.parse().ok()))
        })
        .unwrap_or(0)
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(tree(me).contains(&me));
        assert!(status_kib(me, "VmRSS:") > 0);
        assert!(status_kib(me, "VmHWM:") >= status_kib(me, "VmRSS:") / 2);
        assert_eq!(stat_fields(me).unwrap()[1].parse::<u32>().unwrap(), std::os::unix::process::parent_id());
    }
}
