//! A `local-stack` process for tests that need the whole service over HTTP:
//! started on free ports with a throw-away data directory, stopped (with
//! its functions) on drop. Needs `target/debug/local-stack` and the function
//! binaries built (scripts/test builds them) and cargo-lambda on PATH.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The local stack runs on the real clock and dates what it records with it.
/// A test that dates events around now (up to a minute back, a little ahead)
/// and reads back now's day first waits until it is at least two minutes
/// clear of midnight UTC on both sides, so that everything lands on one day.
/// Returns the (real) instant it went on at.
pub async fn clear_of_midnight() -> chrono::DateTime<chrono::Utc> {
    let real_now = || proxy_metrics::clock::Clock::system().now();
    let margin = chrono::Duration::minutes(2);
    let now = real_now();
    let midnight = now.date_naive().and_time(chrono::NaiveTime::MIN).and_utc();
    let go_at = if now - midnight < margin {
        midnight + margin
    } else if midnight + chrono::Days::new(1) - now < margin + chrono::Duration::minutes(1) {
        midnight + chrono::Days::new(1) + margin
    } else {
        return now;
    };
    let left = go_at - now;
    println!("waiting {left} for midnight UTC to be two minutes behind");
    tokio::time::sleep(left.to_std().unwrap_or_default()).await;
    real_now()
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `local-stack` process on free ports; stopped (with its functions) on drop.
pub struct Stack {
    child: Child,
    pub url: String,
    log: PathBuf,
    _data: tempdir::Dir,
}

mod tempdir {
    /// A directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            let path =
                std::env::temp_dir().join(format!("stack-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Stack {
    pub fn start(env: &[(&str, &str)]) -> Self {
        let data = tempdir::Dir::new();
        let port = free_port();
        let log = data.0.join("stack.log");
        let mut command = Command::new(root().join("target/debug/local-stack"));
        command
            .env("API_PORT", port.to_string())
            .env("DYNAMODB_PORT", free_port().to_string())
            .env("DATA_DIR", &data.0)
            .env("AGGREGATION_INTERVAL_SECONDS", "0")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command
            .spawn()
            .expect("target/debug/local-stack (scripts/test builds it)");
        let mut stack = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            _data: data,
        };
        stack.wait_ready();
        stack
    }

    pub fn log(&self) -> String {
        let mut text = String::new();
        let _ = std::fs::File::open(&self.log).and_then(|mut f| f.read_to_string(&mut text));
        text
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if self.log().contains("(ready)") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the stack exited ({status}):\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the stack did not come up:\n{}", self.log());
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SIGTERM: the stack stops its watcher and functions (one process group).
        unsafe {
            libc_kill(self.child.id() as i32, 15);
        }
        let _ = self.child.wait();
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}
