//! Several logs in one agent (issue 24, bullet 6): a plain path and a glob
//! pattern, a new file matching the pattern while it runs, a SIGKILL,
//! lines in every log and a rotation while it is down, a restart with the
//! same `--state-dir` — each log resumes at its own position, one producer
//! goes on, and the day's counts equal all the logs' lines exactly.
//! `scripts/test` runs it (it needs the built binaries and cargo-lambda).

use crate::agent_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_support::*;

const PROXY: &str = "edge-multi";

/// Every log's saved offset equals its length, nothing pending.
fn delivered(state: &Path, logs: &[PathBuf]) -> bool {
    let Some(s) = saved_state(state) else {
        return false;
    };
    s["pending"].is_null()
        && logs.iter().all(|log| {
            let len = std::fs::metadata(log).map_or(0, |m| m.len());
            s["position"]["files"][log.to_string_lossy().as_ref()]["offset"].as_u64() == Some(len)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts a local stack and the agent; scripts/test runs it"]
async fn several_logs_in_one_agent_resume_each_at_its_own_position_exactly() {
    let (stack, token) = stack_with_proxy(PROXY).await;
    let dir = temp_dir("agent-multi");
    let vhosts = dir.join("vhosts");
    std::fs::create_dir_all(&vhosts).unwrap();
    let main_log = dir.join("access.log");
    let (shop, blog) = (vhosts.join("shop.log"), vhosts.join("blog.log"));
    let state = dir.join("state");
    let state_arg = state.to_string_lossy().into_owned();
    let main_arg = main_log.to_string_lossy().into_owned();
    let glob_arg = vhosts.join("*.log").to_string_lossy().into_owned();
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
        &main_arg,
        &glob_arg,
    ];
    let mut totals = Totals::default();
    let now = real_now() - chrono::Duration::seconds(1);
    append(&main_log, &nginx_lines(0, 30, now, &mut totals));
    append(&shop, &nginx_lines(30, 20, now, &mut totals));
    // not matched by the pattern: never read
    append(
        &vhosts.join("shop.log.1"),
        &nginx_lines(0, 9, now, &mut Totals::default()),
    );

    let agent_log = || read_agent_log(&dir);
    let mut first = agent(&stack, &token, PROXY, &dir, &args);
    let within = Duration::from_secs(20);
    assert!(
        eventually(within, || delivered(
            &state,
            &[main_log.clone(), shop.clone()]
        ))
        .await,
        "both logs delivered, each position saved: {:?}\n{}",
        saved_state(&state),
        agent_log()
    );
    // a new file matching the pattern, picked up while running
    append(&blog, &nginx_lines(50, 15, now, &mut totals));
    let all = [main_log.clone(), shop.clone(), blog.clone()];
    assert!(
        eventually(within, || delivered(&state, &all)).await,
        "the new file was found and delivered: {:?}\n{}",
        saved_state(&state),
        agent_log()
    );
    let producer = saved_state(&state).unwrap()["producerId"].clone();
    // more lines everywhere, and a SIGKILL before, during or after their
    // delivery
    append(&main_log, &nginx_lines(65, 10, now, &mut totals));
    append(&shop, &nginx_lines(75, 10, now, &mut totals));
    append(&blog, &nginx_lines(85, 10, now, &mut totals));
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&first, 9);
    wait_exit(&mut first, Duration::from_secs(10)).await;

    // while it is down: lines in every log, and the plain one rotates
    append(&main_log, &nginx_lines(95, 5, now, &mut totals));
    append(&shop, &nginx_lines(100, 5, now, &mut totals));
    append(&blog, &nginx_lines(105, 5, now, &mut totals));
    std::fs::rename(&main_log, dir.join("access.log.1")).unwrap();
    append(&main_log, &nginx_lines(110, 10, now, &mut totals));

    let mut second = agent(&stack, &token, PROXY, &dir, &args);
    append(&shop, &nginx_lines(120, 5, now, &mut totals));
    assert!(
        eventually(within, || delivered(&state, &all)).await,
        "everything was delivered after the restart: {:?}\n{}",
        saved_state(&state),
        agent_log()
    );
    assert_eq!(
        saved_state(&state).unwrap()["producerId"],
        producer,
        "the same producer went on"
    );
    signal(&second, 15);
    let status = wait_exit(&mut second, Duration::from_secs(20)).await;
    let log = agent_log();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(
        log.contains("resuming at the saved position")
            && log.contains("the log rotated while the agent was stopped"),
        "the restart resumed each log, the plain one inside its rotated file\n{log}"
    );
    let got = day_counts(&stack, &token, PROXY, &totals).await;
    assert_eq!(totals.requests, 125);
    assert_eq!(got, totals, "the day's counts equal the logs'\n{log}");
    let _ = std::fs::remove_dir_all(dir);
}
