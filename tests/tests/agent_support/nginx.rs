//! Debian's nginx for the agent's end-to-end tests (scripts/test-tools
//! installs it): run in the foreground from a private prefix directory, on
//! loopback ports, with the `http {}` servers and log formats a test gives.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

unsafe extern "C" {
    fn geteuid() -> u32;
}

/// An nginx process; killed on drop.
pub struct Nginx {
    dir: PathBuf,
    child: Child,
}

impl Nginx {
    /// Starts nginx with `dir` as its prefix (pid, error log, temp files)
    /// and `http` inside its `http {}` block; returns once every port in
    /// `ports` accepts connections.
    pub fn start(dir: &Path, http: &str, ports: &[u16]) -> Self {
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let d = dir.display();
        // Root's workers would switch to `nobody`, who cannot enter a
        // private temp directory: keep them root (loopback only, a test).
        let user = if unsafe { geteuid() } == 0 {
            "user root;"
        } else {
            ""
        };
        let conf = format!(
            r#"{user}
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;
  uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;
{http}
}}
"#
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .args([
                "-p",
                &d.to_string(),
                "-c",
                "nginx.conf",
                "-g",
                "daemon off;",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (scripts/test-tools installs Debian's nginx)");
        let nginx = Self {
            dir: dir.to_owned(),
            child,
        };
        let up = |p: &u16| std::net::TcpStream::connect(format!("127.0.0.1:{p}")).is_ok();
        for _ in 0..100 {
            if ports.iter().all(up) {
                return nginx;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "nginx did not start: {:?}",
            std::fs::read_to_string(dir.join("error.log"))
        );
    }

    /// `nginx -s reopen`: the access logs are opened again (after a `mv`).
    pub fn reopen(&self) {
        let d = self.dir.display().to_string();
        let status = Command::new("nginx")
            .args(["-p", &d, "-c", "nginx.conf", "-s", "reopen"])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
