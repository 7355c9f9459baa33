//! What the fleet's benchmarks share: a throwaway PostgreSQL server (as `fleet/tests/support`
//! starts it, but with `fsync` on: the figures are for a durable commit) and a free port.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A throwaway PostgreSQL (as `fleet/tests/support` starts it, but with fsync on).
pub struct Pg {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    root: bool,
}

impl Pg {
    pub fn start() -> Pg {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("apt-get install postgresql")
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").is_file())
            .max()
            .expect("apt-get install postgresql");
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let dir = tempfile::Builder::new()
            .prefix("fleet-bench-pg-")
            .tempdir()
            .unwrap()
            .keep();
        if root {
            assert!(Command::new("chown")
                .arg("nobody")
                .arg(&dir)
                .status()
                .unwrap()
                .success());
        }
        let pg = Pg {
            port: free_port(),
            dir,
            bin,
            root,
        };
        pg.sh(&format!(
            "{}/initdb -D {}/data -U postgres -A trust -E UTF8 > {}/initdb.log 2>&1",
            pg.bin.display(),
            pg.dir.display(),
            pg.dir.display()
        ));
        pg.sh(&format!(
            "{}/pg_ctl -D {}/data -o '-p {} -k {} -c listen_addresses=127.0.0.1' -l {}/log -w start > /dev/null",
            pg.bin.display(),
            pg.dir.display(),
            pg.port,
            pg.dir.display(),
            pg.dir.display()
        ));
        pg
    }

    fn sh(&self, cmd: &str) {
        let st = if self.root {
            Command::new("su")
                .args(["nobody", "-s", "/bin/sh", "-c", cmd])
                .status()
        } else {
            Command::new("/bin/sh").args(["-c", cmd]).status()
        }
        .unwrap();
        assert!(st.success(), "{cmd}: {st}");
    }

    pub fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn postmaster(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.dir.join("data/postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.sh(&format!(
            "{}/pg_ctl -D {}/data -m immediate stop > /dev/null 2>&1 || true",
            self.bin.display(),
            self.dir.display()
        ));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
