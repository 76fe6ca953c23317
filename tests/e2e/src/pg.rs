//! A private PostgreSQL cluster for tests that stop and start the database
//! (the shared test cluster must stay up for the other tests).

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{free_port, BoxError};

pub struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    pub port: u16,
    /// Only the owner stops and removes the cluster on drop.
    owned: bool,
}

static CLUSTERS: AtomicU32 = AtomicU32::new(0);

fn pg_bin_dir() -> Result<PathBuf, BoxError> {
    if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .ok_or_else(|| "no PostgreSQL binaries (set PG_BIN_DIR)".into())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Cluster {
    /// A second handle to the same cluster for stop/start from another
    /// task; only the original removes the cluster when dropped.
    pub fn clone_handle(&self) -> Cluster {
        Cluster {
            bin: self.bin.clone(),
            data: self.data.clone(),
            port: self.port,
            owned: false,
        }
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if is_root() {
            let mut c = Command::new("runuser");
            c.arg("-u").arg("postgres").arg("--").arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<(), BoxError> {
        let out = self.command(tool).args(args).output()?;
        if !out.status.success() {
            return Err(format!(
                "{tool} {args:?} failed: {}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(self.data.join("server.log")).unwrap_or_default()
            )
            .into());
        }
        Ok(())
    }

    pub fn init() -> Result<Cluster, BoxError> {
        let data = std::env::temp_dir().join(format!(
            "collector-faults-pg-{}-{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data)?;
        let cluster = Cluster {
            bin: pg_bin_dir()?,
            data,
            port: free_port(),
            owned: true,
        };
        let dir = cluster.data.to_string_lossy().to_string();
        if is_root() {
            let ok = Command::new("chown")
                .args(["postgres:postgres", &dir])
                .status()?
                .success();
            if !ok {
                return Err("chown postgres failed".into());
            }
        }
        Command::new("chmod").args(["700", &dir]).status()?;
        cluster.run(
            "initdb",
            &[
                "-D",
                &dir,
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )?;
        cluster.start()?;
        Ok(cluster)
    }

    pub fn start(&self) -> Result<(), BoxError> {
        let dir = self.data.to_string_lossy().to_string();
        let log = self.data.join("server.log").to_string_lossy().to_string();
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={dir} -c fsync=off",
            self.port
        );
        self.run(
            "pg_ctl",
            &[
                "-D", &dir, "-l", &log, "-o", &opts, "-w", "-t", "30", "start",
            ],
        )
    }

    pub fn stop(&self, mode: &str) -> Result<(), BoxError> {
        let dir = self.data.to_string_lossy().to_string();
        self.run("pg_ctl", &["-D", &dir, "-m", mode, "-w", "stop"])
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let _ = self.stop("immediate");
        let _ = std::fs::remove_dir_all(&self.data);
    }
}
