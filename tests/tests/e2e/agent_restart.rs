//! The agent across restarts (issue 24, the position file): SIGKILL while
//! it follows a growing log, lines written and the log rotated while it is
//! down, a restart with the same `--state-dir` — and the day's counts equal
//! the log's lines exactly: nothing lost, nothing counted twice.
//! `scripts/test` runs it (it needs the built binaries and cargo-lambda).

use crate::agent_support;

use std::time::Duration;

use agent_support::*;

const PROXY: &str = "edge-restart";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts a local stack and the agent; scripts/test runs it"]
async fn a_killed_agent_resumes_its_position_producer_and_sequence_exactly() {
    let (stack, token) = stack_with_proxy(PROXY).await;
    let dir = temp_dir("agent-restart");
    let log = dir.join("access.log");
    let state = dir.join("state");
    let state_arg = state.to_string_lossy().into_owned();
    let log_arg = log.to_string_lossy().into_owned();
    let args = [
        "--format",
        "nginx",
        "--from-start",
        "--state-dir",
        &state_arg,
        "--flush-interval",
        "1",
        "--poll-ms",
        "50",
        "--rotate-wait",
        "1",
        &log_arg,
    ];
    let mut totals = Totals::default();
    let now = real_now() - chrono::Duration::seconds(1);
    append(&log, &nginx_lines(0, 40, now, &mut totals));

    let mut first = agent(&stack, &token, PROXY, &dir, &args);
    let len = std::fs::metadata(&log).unwrap().len();
    let delivered = |len: u64| {
        let state = state.clone();
        move || {
            saved_state(&state).is_some_and(|s| {
                s["position"]["offset"].as_u64() == Some(len) && s["pending"].is_null()
            })
        }
    };
    assert!(
        eventually(Duration::from_secs(30), delivered(len)).await,
        "the first 40 lines were delivered and their position saved: {:?}\n{}",
        saved_state(&state),
        read_agent_log(&dir)
    );
    let producer = saved_state(&state).unwrap()["producerId"].clone();
    // more lines, and a SIGKILL before, during or after their delivery
    append(&log, &nginx_lines(40, 15, now, &mut totals));
    tokio::time::sleep(Duration::from_millis(600)).await;
    signal(&first, 9);
    wait_exit(&mut first, Duration::from_secs(10)).await;

    // while it is down: lines in the old file, then the log rotates by
    // rename and a new file fills
    append(&log, &nginx_lines(55, 5, now, &mut totals));
    std::fs::rename(&log, dir.join("access.log.1")).unwrap();
    append(&log, &nginx_lines(60, 20, now, &mut totals));

    let mut second = agent(&stack, &token, PROXY, &dir, &args);
    append(&log, &nginx_lines(80, 10, now, &mut totals));
    let len = std::fs::metadata(&log).unwrap().len();
    assert!(
        eventually(Duration::from_secs(30), delivered(len)).await,
        "everything was delivered after the restart: {:?}\n{}",
        saved_state(&state),
        read_agent_log(&dir)
    );
    let saved = saved_state(&state).unwrap();
    assert_eq!(saved["producerId"], producer, "the same producer went on");
    signal(&second, 15);
    let status = wait_exit(&mut second, Duration::from_secs(30)).await;
    let agent_log = read_agent_log(&dir);
    assert!(status.success(), "{status:?}\n{agent_log}");

    assert!(
        agent_log.contains("resuming at the saved position")
            && agent_log.contains("the log rotated while the agent was stopped"),
        "the restart resumed inside the rotated file\n{agent_log}"
    );
    let got = day_counts(&stack, &token, PROXY, &totals).await;
    assert_eq!(totals.requests, 90);
    assert_eq!(got, totals, "the day's counts equal the log's\n{agent_log}");
    let _ = std::fs::remove_dir_all(dir);
}
