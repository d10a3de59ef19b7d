//! The agent binary end to end without a server: `--dry-run` prints the
//! batches it would send, which must add up to the log exactly.

mod common;

use std::time::Duration;

use common::{Agent, nginx_log, now, temp_dir, totals_of_batches, write};

#[test]
fn once_from_start_reports_every_line_of_the_log_and_skips_malformed_ones() {
    let dir = temp_dir("once");
    let log = dir.join("access.log");
    let (mut text, totals) = nginx_log(
        1500,
        now() - chrono::Duration::seconds(3),
        chrono::Duration::seconds(90),
        1,
    );
    // malformed lines are skipped, not counted, and do not stop the agent
    text.push_str("this is not an access log line\n");
    text.push_str(
        "10.0.0.1 - - [15/Jan/2024:10:04:05 +0000] \"GET / HTTP/1.1\" abc 12 \"-\" \"-\" 0.1\n",
    );
    write(&log, &text);

    let agent = Agent::spawn(
        &[
            "--dry-run",
            "--once",
            "--from-start",
            "--format",
            "nginx",
            log.to_str().unwrap(),
        ],
        &[("PROXY_ID", "edge-test-1")],
    );
    let (status, stdout, stderr) = agent.wait(Duration::from_secs(60));
    assert!(status.success(), "{status:?}\n{stderr}");
    let sent = totals_of_batches(&stdout);
    assert_eq!(sent, totals, "{stderr}");
    assert!(stderr.contains("lines_malformed=2"), "{stderr}");
    // 90 s of requests are ~10 intervals: pre-aggregated, not one per line
    let events: usize = stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["events"]
                .as_array()
                .unwrap()
                .len()
        })
        .sum();
    assert!(
        (9..=11).contains(&events),
        "{events} events for 1500 requests"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sigterm_reads_what_is_written_flushes_and_exits_zero() {
    let dir = temp_dir("sigterm");
    let log = dir.join("access.log");
    write(&log, "");
    let agent = Agent::spawn(
        &[
            "--dry-run",
            // the file is empty: the lines must count even if the agent
            // opens it only after they were written
            "--from-start",
            "--format",
            "nginx",
            "--poll-ms",
            "50",
            log.to_str().unwrap(),
        ],
        &[("PROXY_ID", "edge-test-2")],
    );
    agent.wait_started();
    let (text, totals) = nginx_log(
        700,
        now() - chrono::Duration::seconds(2),
        chrono::Duration::seconds(25),
        2,
    );
    write(&log, &text);
    agent.sigterm();
    let (status, stdout, stderr) = agent.wait(Duration::from_secs(30));
    assert!(status.success(), "{status:?}\n{stderr}");
    assert_eq!(totals_of_batches(&stdout), totals, "{stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn stdin_works_and_its_end_flushes() {
    let (text, totals) = nginx_log(
        200,
        now() - chrono::Duration::seconds(1),
        chrono::Duration::seconds(15),
        3,
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_proxy-metrics-agent"))
        .args(["--dry-run", "--proxy-id", "edge-test-3", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        totals_of_batches(&String::from_utf8_lossy(&out.stdout)),
        totals
    );
}

#[test]
fn missing_settings_are_refused_with_a_message() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_proxy-metrics-agent"))
        .args(["--proxy-id", "edge-test-4", "-"])
        .env_remove("PROXY_METRICS_URL")
        .env_remove("PROXY_METRICS_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--url"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_proxy-metrics-agent"))
        .args(["--dry-run", "--proxy-id", "not valid!", "-"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
