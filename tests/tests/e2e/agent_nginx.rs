//! The agent beside a real nginx (Debian's package, on loopback): `ab`
//! traffic logged in the stock `main` format and in a custom `log_format`,
//! one log rotated with `mv` + `nginx -s reopen` under traffic and its
//! agent SIGKILLed and restarted midway, the other copytruncated — and the
//! day's counts from the API equal nginx's own log lines exactly (requests,
//! 5xx errors, bytes). `scripts/test` runs it (scripts/test-tools installs
//! nginx and apache2-utils).

use crate::agent_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::stack::free_port;
use agent_support::nginx::Nginx;
use agent_support::*;

const CUSTOM: &str = r#"$remote_addr [$time_iso8601] "$request" $status $bytes_sent rt=$request_time rl=$request_length urt="$upstream_response_time""#;

/// nginx on two loopback ports: `main.log` in the stock `main` format,
/// `custom.log` in [`CUSTOM`]. `/` answers 200 with a body, `/err` 502,
/// `/missing` 404.
struct Servers {
    nginx: Nginx,
    main_url: String,
    custom_url: String,
}

impl Servers {
    fn start(dir: &Path) -> Self {
        let (p1, p2) = (free_port(), free_port());
        let d = dir.display();
        let http = format!(
            r#"  log_format main '$remote_addr - $remote_user [$time_local] "$request" '
                  '$status $body_bytes_sent "$http_referer" '
                  '"$http_user_agent" "$http_x_forwarded_for"';
  log_format custom '{CUSTOM}';
  server {{
    listen 127.0.0.1:{p1};
    access_log {d}/main.log main;
    location / {{ return 200 "hello from nginx, a body of some length\n"; }}
    location /err {{ return 502; }}
  }}
  server {{
    listen 127.0.0.1:{p2};
    access_log {d}/custom.log custom;
    location / {{ return 200 "custom\n"; }}
    location /err {{ return 503; }}
  }}"#
        );
        Self {
            nginx: Nginx::start(dir, &http, &[p1, p2]),
            main_url: format!("http://127.0.0.1:{p1}"),
            custom_url: format!("http://127.0.0.1:{p2}"),
        }
    }
}

/// `ab` traffic, in the background: `n` requests to `url`.
fn ab(url: &str, n: u32) -> Child {
    Command::new("ab")
        .args(["-q", "-n", &n.to_string(), "-c", "4", url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ab (scripts/test-tools installs apache2-utils)")
}

fn wait(mut children: Vec<Child>) {
    for c in &mut children {
        assert!(c.wait().unwrap().success());
    }
}

/// The totals of nginx's own log files, read independently of the agent:
/// in both formats the status and the byte count follow the quoted request.
fn nginx_totals(files: &[PathBuf], days: &Totals) -> Totals {
    let mut t = Totals {
        days: days.days.clone(),
        ..Totals::default()
    };
    for file in files {
        for line in std::fs::read_to_string(file).unwrap_or_default().lines() {
            let after_request = line.split('"').nth(2).unwrap();
            let mut fields = after_request.split_whitespace();
            let status: u16 = fields.next().unwrap().parse().unwrap();
            let bytes: u64 = fields.next().unwrap().parse().unwrap();
            t.requests += 1;
            t.errors += u64::from(status >= 500);
            t.bytes += bytes;
        }
    }
    t
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Until the agent's saved position is the end of `log` (same inode) with
/// nothing pending.
async fn caught_up(state: &Path, log: &Path) -> bool {
    eventually(Duration::from_secs(40), || {
        let Ok(meta) = std::fs::metadata(log) else {
            return false;
        };
        let ino = std::os::unix::fs::MetadataExt::ino(&meta);
        saved_state(state).is_some_and(|s| {
            s["pending"].is_null()
                && s["position"]["offset"].as_u64() == Some(meta.len())
                && s["position"]["ino"].as_u64() == Some(ino)
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts nginx, a local stack and two agents; scripts/test runs it"]
async fn counts_equal_nginx_own_logs_across_rotation_copytruncate_and_sigkill() {
    let (stack, token) = stack_with_proxy("edge-nginx-main").await;
    let resp = reqwest::Client::new()
        .post(format!("{}/proxies", stack.url))
        .bearer_auth(&token)
        .json(&serde_json::json!({"proxyId": "edge-nginx-custom"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let dir = temp_dir("agent-nginx");
    let servers = Servers::start(&dir);
    let mut days = Totals::default();
    days.days.insert(real_now().date_naive());

    let (main_log, custom_log) = (dir.join("main.log"), dir.join("custom.log"));
    let (main_state, custom_state) = (dir.join("state-main"), dir.join("state-custom"));
    let args = |log: &Path, state: &Path, format: &str| -> Vec<String> {
        [
            "--nginx-log-format",
            format,
            "--state-dir",
            &state.to_string_lossy(),
            "--flush-interval",
            "1",
            "--poll-ms",
            "50",
            "--rotate-wait",
            "2",
            "--from-start",
            &log.to_string_lossy(),
        ]
        .map(String::from)
        .to_vec()
    };
    let main_args = args(&main_log, &main_state, "main");
    let custom_args = args(&custom_log, &custom_state, &format!("'{CUSTOM}'"));
    let mut main_agent = agent(&stack, &token, "edge-nginx-main", &dir, &strs(&main_args));
    let mut custom_agent = agent(
        &stack,
        &token,
        "edge-nginx-custom",
        &dir,
        &strs(&custom_args),
    );
    // Both hold their logs open before the rotation below: an agent that
    // started after the rename would never see main.log.1.
    let agent_log = || read_agent_log(&dir);
    assert!(
        eventually(Duration::from_secs(30), || agent_log()
            .matches("proxy-metrics-agent started")
            .count()
            == 2)
        .await,
        "both agents started\n{}",
        agent_log()
    );

    // traffic; the main log rotated by mv + reopen while it flows
    let (m, c) = (&servers.main_url, &servers.custom_url);
    let traffic = vec![
        ab(&format!("{m}/"), 400),
        ab(&format!("{m}/err"), 60),
        ab(&format!("{c}/"), 300),
        ab(&format!("{c}/err"), 40),
    ];
    std::thread::sleep(Duration::from_millis(300));
    std::fs::rename(&main_log, dir.join("main.log.1")).unwrap();
    servers.nginx.reopen();
    // the main agent killed midway, under steady traffic, once it has
    // delivered some lines (its position is saved), and restarted
    let url = format!("{m}/");
    let steady = std::thread::spawn(move || {
        for i in 0..20 {
            let path = if i % 4 == 0 { "missing" } else { "" };
            wait(vec![ab(&format!("{url}{path}"), 20)]);
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    assert!(
        eventually(Duration::from_secs(20), || saved_state(&main_state)
            .is_some_and(|s| s["position"]["offset"].as_u64() > Some(0)))
        .await,
        "the main agent delivered some lines before it was killed"
    );
    signal(&main_agent, 9);
    wait_exit(&mut main_agent, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut main_agent = agent(&stack, &token, "edge-nginx-main", &dir, &strs(&main_args));
    wait(traffic);
    steady.join().unwrap();

    // copytruncate of the custom log, once its agent has read it all (lines
    // written between the copy and the truncate would be lost to any reader)
    assert!(
        caught_up(&custom_state, &custom_log).await,
        "custom agent caught up"
    );
    std::fs::copy(&custom_log, dir.join("custom.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&custom_log)
        .unwrap()
        .set_len(0)
        .unwrap();
    wait(vec![
        ab(&format!("{c}/"), 100),
        ab(&format!("{c}/err"), 20),
        ab(&format!("{m}/err"), 30),
    ]);

    assert!(
        caught_up(&main_state, &main_log).await,
        "main agent caught up"
    );
    assert!(
        caught_up(&custom_state, &custom_log).await,
        "custom agent caught up after copytruncate"
    );
    signal(&main_agent, 15);
    signal(&custom_agent, 15);
    let s1 = wait_exit(&mut main_agent, Duration::from_secs(30)).await;
    let s2 = wait_exit(&mut custom_agent, Duration::from_secs(30)).await;
    let agent_log = read_agent_log(&dir);
    assert!(s1.success() && s2.success(), "{s1:?} {s2:?}\n{agent_log}");
    days.days.insert(real_now().date_naive());

    let main_expected = nginx_totals(&[dir.join("main.log.1"), main_log.clone()], &days);
    let custom_expected = nginx_totals(&[dir.join("custom.log.1"), custom_log.clone()], &days);
    assert_eq!(main_expected.requests, 400 + 60 + 20 * 20 + 30);
    assert_eq!(main_expected.errors, 60 + 30);
    assert_eq!(custom_expected.requests, 300 + 40 + 100 + 20);
    assert_eq!(
        day_counts(&stack, &token, "edge-nginx-main", &days).await,
        main_expected,
        "main: the day's counts equal nginx's log\n{agent_log}"
    );
    assert_eq!(
        day_counts(&stack, &token, "edge-nginx-custom", &days).await,
        custom_expected,
        "custom: the day's counts equal nginx's log\n{agent_log}"
    );
    assert!(
        agent_log.contains("log truncated (copytruncate)"),
        "{agent_log}"
    );
    drop(servers);
    let _ = std::fs::remove_dir_all(dir);
}
