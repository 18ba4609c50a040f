//! A private RabbitMQ broker (Debian's `rabbitmq-server`, installed by `tests/run.sh`) on free
//! ports with its own directories, cookie and epmd; killed when dropped. Started the way
//! the Debian wrapper would, minus its switch to the `rabbitmq` user: the scripts in
//! `/usr/lib/rabbitmq/bin` with every path and port in the environment.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SBIN: &str = "/usr/lib/rabbitmq/bin";
/// A broker here boots in 7-19 s (most of it the Erlang VM loading code).
const START_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Broker {
    pub port: u16,
    dist_port: u16,
    epmd_port: u16,
    dir: tempfile::TempDir,
    epmd: Option<Child>,
    server: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Broker {
    pub fn start() -> Broker {
        assert!(
            Path::new(SBIN).join("rabbitmq-server").exists(),
            "rabbitmq-server is missing: run `bash tests/run.sh` (it installs Debian's rabbitmq-server)"
        );
        let dir = tempfile::tempdir().unwrap();
        let (port, dist_port, epmd_port) = (free_port(), free_port(), free_port());
        for d in ["home", "mnesia", "log"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let p = dir.path();
        std::fs::write(p.join("rabbitmq-env.conf"), "").unwrap();
        std::fs::write(p.join("enabled_plugins"), "[].").unwrap();
        std::fs::write(p.join("advanced.config"), "[].").unwrap();
        std::fs::write(p.join("rabbitmq.conf"), format!("listeners.tcp.default = 127.0.0.1:{port}\n")).unwrap();
        let mut broker = Broker { port, dist_port, epmd_port, dir, epmd: None, server: None };
        let epmd = Command::new("epmd")
            .args(["-port", &epmd_port.to_string(), "-address", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start epmd");
        broker.epmd = Some(epmd);
        broker.start_again();
        broker
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn command(&self, program: &str) -> Command {
        let d = self.dir.path();
        let mut c = Command::new(Path::new(SBIN).join(program));
        let path = |s: &str| d.join(s).display().to_string();
        c.env("HOME", path("home"))
            .env("RABBITMQ_CONF_ENV_FILE", path("rabbitmq-env.conf"))
            .env("RABBITMQ_CONFIG_FILE", path("rabbitmq"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", path("advanced.config"))
            .env("RABBITMQ_NODENAME", format!("ey_{}@localhost", self.port))
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "-kernel inet_dist_use_interface {127,0,0,1}")
            .env("RABBITMQ_MNESIA_BASE", path("mnesia"))
            .env("RABBITMQ_LOG_BASE", path("log"))
            .env("RABBITMQ_PID_FILE", path("rabbit.pid"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", path("enabled_plugins"))
            .env("RABBITMQ_FEATURE_FLAGS_FILE", path("feature_flags"))
            .env("RABBITMQ_PLUGINS_EXPAND_DIR", path("plugins-expand"))
            .env("RABBITMQ_QUORUM_DIR", path("quorum"))
            .env("RABBITMQ_STREAM_DIR", path("stream"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    /// Starts the broker (again, on the same data) and waits until it takes AMQP connections.
    pub fn start_again(&mut self) {
        let _ = std::fs::remove_file(self.dir.path().join("rabbit.pid"));
        self.server = Some(self.command("rabbitmq-server").spawn().expect("start rabbitmq-server"));
        let pid_file = self.dir.path().join("rabbit.pid");
        let waited = self
            .command("rabbitmqctl")
            .args(["-q", "-n", &format!("ey_{}@localhost", self.port), "wait"])
            .arg(&pid_file)
            .args(["--timeout", &START_TIMEOUT.as_secs().to_string()])
            .status()
            .expect("rabbitmqctl wait");
        assert!(waited.success(), "rabbitmq-server did not start; its log: {}", self.log_dir().display());
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "the AMQP listener did not open");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_dir(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// `kill -9` of the Erlang VM: no shutdown.
    pub fn kill9(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("rabbit.pid")) {
            let _ = Command::new("kill").args(["-9", pid.trim()]).status();
        }
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
        if let Some(mut epmd) = self.epmd.take() {
            let _ = epmd.kill();
            let _ = epmd.wait();
        }
    }
}
