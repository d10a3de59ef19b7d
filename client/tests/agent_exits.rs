//! The agent's signals and exit statuses (issue 24): SIGHUP never kills, a
//! missing LOG is an error, and losing data (lines of a log rotated away
//! included) is a non-zero exit.

mod common;

use std::time::Duration;

use common::{Agent, nginx_log, now, temp_dir, totals_of_batches, write};

#[test]
fn sighup_does_not_kill_the_agent_nor_lose_a_line() {
    let dir = temp_dir("sighup");
    let log = dir.join("access.log");
    write(&log, "");
    let agent = Agent::spawn(
        &[
            "--dry-run",
            "--from-start",
            "--poll-ms",
            "50",
            log.to_str().unwrap(),
        ],
        &[("PROXY_ID", "edge-hup")],
    );
    agent.wait_started();
    agent.signal("HUP");
    std::thread::sleep(Duration::from_millis(200));
    let (text, totals) = nginx_log(
        20,
        now() - chrono::Duration::seconds(2),
        chrono::Duration::seconds(5),
        1,
    );
    write(&log, &text);
    agent.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    agent.sigterm();
    let (status, stdout, stderr) = agent.wait(Duration::from_secs(30));
    assert!(status.success(), "{status:?}\n{stderr}");
    assert_eq!(totals_of_batches(&stdout), totals, "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_log_argument_is_required() {
    let agent = Agent::spawn(&["--dry-run"], &[("PROXY_ID", "edge-nolog")]);
    let (status, _, stderr) = agent.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("<LOG>"), "{stderr}");
}

#[test]
fn lost_observations_make_a_non_zero_exit() {
    // the API is a closed port: nothing can be delivered before the deadline
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = temp_dir("dropped");
    let log = dir.join("access.log");
    let (text, _) = nginx_log(
        30,
        now() - chrono::Duration::seconds(30),
        chrono::Duration::seconds(20),
        1,
    );
    write(&log, &text);
    let url = format!("http://127.0.0.1:{port}");
    let agent = Agent::spawn(
        &[
            "--once",
            "--from-start",
            "--no-state",
            "--shutdown-timeout",
            "1",
            log.to_str().unwrap(),
        ],
        &[
            ("PROXY_ID", "edge-dropped"),
            ("PROXY_METRICS_URL", &url),
            ("PROXY_METRICS_TOKEN", "t.t"),
        ],
    );
    let (status, _, stderr) = agent.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("dropped_shutdown"), "{stderr}");
    assert!(stderr.contains("observations were lost"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Lines written to a rotated log after its grace period and last read
/// cannot be delivered: they are counted (cause `rotated_away`, in lines
/// and in the requests they hold) and the exit status says data was lost.
#[test]
fn lines_written_to_a_log_rotated_away_are_counted_and_make_a_non_zero_exit() {
    let dir = temp_dir("rotated-away");
    let (log, old) = (dir.join("access.log"), dir.join("access.log.1"));
    let end = now() - chrono::Duration::seconds(2);
    let (before, totals) = nginx_log(5, end, chrono::Duration::seconds(5), 1);
    write(&log, &before);
    let agent = Agent::spawn(
        &[
            "--dry-run",
            "--from-start",
            "--no-state",
            "--poll-ms",
            "20",
            "--rotate-wait",
            "0.05",
            log.to_str().unwrap(),
        ],
        &[("PROXY_ID", "edge-rotated-away")],
    );
    agent.wait_started();
    std::fs::rename(&log, &old).unwrap();
    write(&log, "");
    agent.wait_for_log("following the new file from its start");
    // nginx's workers not reopened yet: still writing to the old file
    let (late, _) = nginx_log(3, end, chrono::Duration::seconds(5), 2);
    let mut file = std::fs::OpenOptions::new().append(true).open(&old).unwrap();
    std::io::Write::write_all(&mut file, late.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    agent.sigterm();
    let (status, stdout, stderr) = agent.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert_eq!(totals_of_batches(&stdout), totals, "{stderr}");
    assert!(stderr.contains("lines_rotated_away=3"), "{stderr}");
    assert!(stderr.contains("dropped_rotated_away=3"), "{stderr}");
    assert!(
        stderr.contains("counted as dropped (cause rotated_away)"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The progress line names every drop cause, the agent's own included.
#[test]
fn the_progress_line_names_every_drop_cause() {
    let dir = temp_dir("progress");
    let log = dir.join("access.log");
    let (text, _) = nginx_log(3, now(), chrono::Duration::seconds(3), 1);
    write(&log, &text);
    let agent = Agent::spawn(
        &[
            "--dry-run",
            "--from-start",
            "--no-state",
            "--progress-interval",
            "0.2",
            log.to_str().unwrap(),
        ],
        &[("PROXY_ID", "edge-progress")],
    );
    agent.wait_for_log("lines_read=3");
    agent.sigterm();
    let (status, _, stderr) = agent.wait(Duration::from_secs(30));
    assert!(status.success(), "{stderr}");
    let progress = stderr
        .lines()
        .find(|l| l.contains("progress") && l.contains("lines_read=3"))
        .unwrap_or_else(|| panic!("no progress line in:\n{stderr}"));
    for cause in [
        "buffer_full",
        "rejected",
        "conflict",
        "stale",
        "gave_up",
        "shutdown",
        "rotated_away",
    ] {
        assert!(
            progress.contains(&format!(" dropped_{cause}=0")),
            "{cause}: {progress}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn every_setting_can_come_from_the_environment() {
    let dir = temp_dir("env");
    let log = dir.join("access.log");
    let (text, totals) = nginx_log(
        40,
        now() - chrono::Duration::seconds(2),
        chrono::Duration::seconds(15),
        1,
    );
    write(&log, &text);
    let agent = Agent::spawn(
        &[],
        &[
            ("PROXY_ID", "edge-env"),
            ("PROXY_METRICS_LOG", log.to_str().unwrap()),
            ("PROXY_METRICS_DRY_RUN", "true"),
            ("PROXY_METRICS_ONCE", "true"),
            ("PROXY_METRICS_FROM_START", "true"),
            ("PROXY_METRICS_FORMAT", "nginx"),
            ("PROXY_METRICS_FLUSH_INTERVAL", "1"),
            ("PROXY_METRICS_POLL_MS", "20"),
        ],
    );
    let (status, stdout, stderr) = agent.wait(Duration::from_secs(30));
    assert!(status.success(), "{status:?}\n{stderr}");
    assert_eq!(totals_of_batches(&stdout), totals, "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

fn get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}

#[test]
fn listen_serves_its_own_metrics_and_health() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let dir = temp_dir("listen");
    let log = dir.join("access.log");
    let (text, _) = nginx_log(
        25,
        now() - chrono::Duration::seconds(2),
        chrono::Duration::seconds(5),
        1,
    );
    write(&log, &format!("{text}not a log line\n"));
    let agent = Agent::spawn(
        &[
            "--dry-run",
            "--from-start",
            "--listen",
            &addr,
            "--poll-ms",
            "20",
            log.to_str().unwrap(),
        ],
        &[("PROXY_ID", "edge-listen")],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        if let Some(m) = get(&addr, "/metrics").filter(|m| m.contains("lines_read_total 26")) {
            break m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no /metrics with 26 lines read"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("proxy_metrics_agent_lines_parsed_total 25\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("proxy_metrics_agent_lines_malformed_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("proxy_metrics_agent_observations_dropped_total{cause=\"buffer_full\"} 0\n")
    );
    let health = get(&addr, "/healthz").unwrap();
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"),
        "{health}"
    );
    agent.sigterm();
    let (status, _, stderr) = agent.wait(Duration::from_secs(30));
    assert!(status.success(), "{status:?}\n{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}
