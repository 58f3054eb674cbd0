//! The status page in a real browser: headless Chromium (Debian package `chromium`) loads `/` from a running
//! appliance, and the test reads what the page itself observed (it records stream frames it saw change and the
//! zone states it shows, in a hidden element): a camera stream must update, and a zone test started over the
//! operator API must appear on the page. A screenshot is saved to target/live-status-page.png for review.
//!
//! Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON messages separated
//! by NUL on fds 3 and 4), so no websocket client or browser download is needed. Without Chromium the test is
//! skipped, unless EMBER_BROWSER_TEST=require (as in .ci/run), where a missing browser fails it.

mod common;

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{SharedBuf, http_post, load, scaled};
use ember_edge::app::{App, Overrides};

const SITE: &str = r#"
[telemetry]
listen = "127.0.0.1:0"
[[cameras]]
name = "cam"
source = "replay"
path = "builtin:demo"
fps = 5.0
[sensors]
listen = ["127.0.0.1:0"]
[[sensors.devices]]
name = "dev"
loc_id = "1234"
[[simulator]]
loc_id = "1234"
scenario = "idle"
interval_secs = 0.5
# The camera is not in the zone: the demo frames show fire, and this zone must change only when the test says.
[[zones]]
name = "room"
devices = ["dev"]
"#;

fn chromium() -> Option<String> {
    let p = std::env::var("EMBER_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    std::path::Path::new(&p).exists().then_some(p)
}

/// A Chromium child driven over the DevTools pipe.
struct Browser {
    child: Child,
    tx: std::fs::File,
    rx: mpsc::Receiver<serde_json::Value>,
    next_id: u64,
    _profile: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills two fds we then own.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both fds are fresh and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Browser {
    fn launch(exe: &str) -> Browser {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let profile = std::env::temp_dir().join(format!("ember-chromium-{}", std::process::id()));
        std::fs::create_dir_all(&profile).unwrap();
        let (cmd_r, cmd_w) = pipe();
        let (resp_r, resp_w) = pipe();
        let (cr, rw) = (cmd_r.as_raw_fd(), resp_w.as_raw_fd());
        let mut cmd = Command::new(exe);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-pipe",
            "--window-size=1280,1100",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (dup2) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(cr, 3) < 0 || libc::dup2(rw, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start chromium");
        drop(cmd_r);
        drop(resp_w);
        let (tx, rx) = mpsc::channel();
        let mut reader = std::fs::File::from(resp_r);
        std::thread::spawn(move || {
            let mut pending = Vec::new();
            let mut buf = [0u8; 65536];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                pending.extend_from_slice(&buf[..n]);
                while let Some(p) = pending.iter().position(|&b| b == 0) {
                    let msg: Vec<u8> = pending.drain(..=p).collect();
                    if let Ok(v) = serde_json::from_slice(&msg[..msg.len() - 1])
                        && tx.send(v).is_err()
                    {
                        return;
                    }
                }
            }
        });
        Browser { child, tx: std::fs::File::from(cmd_w), rx, next_id: 0, _profile: TempDir(profile) }
    }

    /// Sends a DevTools command and waits for its answer.
    fn call(&mut self, session: Option<&str>, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = serde_json::json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = s.into();
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.tx.write_all(&bytes).expect("write to chromium");
        let deadline = Instant::now() + scaled(Duration::from_secs(30));
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self.rx.recv_timeout(left).unwrap_or_else(|_| panic!("no answer to {method}"));
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method} failed: {v}");
                return v["result"].clone();
            }
        }
    }

    fn eval(&mut self, session: &str, expr: &str) -> serde_json::Value {
        let r = self.call(
            Some(session),
            "Runtime.evaluate",
            serde_json::json!({"expression": expr, "returnByValue": true}),
        );
        r["result"]["value"].clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &c)| acc | (val(c) as u32) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_live_stream_and_zone_changes() {
    let Some(exe) = chromium() else {
        assert!(
            std::env::var("EMBER_BROWSER_TEST").as_deref() != Ok("require"),
            "EMBER_BROWSER_TEST=require but no Chromium at /usr/bin/chromium (apt-get install chromium)"
        );
        eprintln!("skipped: no Chromium (apt-get install chromium)");
        return;
    };
    let ov = Overrides { collector_sink: Some(Box::new(SharedBuf::default())), ..Default::default() };
    let app = App::start(&load(SITE), ov).await.unwrap();
    let addr = app.telemetry_addr;
    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/live-status-page.png");
    tokio::task::spawn_blocking(move || {
        let mut b = Browser::launch(&exe);
        let target = b.call(None, "Target.createTarget", serde_json::json!({"url": format!("http://{addr}/")}));
        let target_id = target["targetId"].as_str().expect("target id").to_owned();
        let attached =
            b.call(None, "Target.attachToTarget", serde_json::json!({"targetId": target_id, "flatten": true}));
        let session = attached["sessionId"].as_str().expect("session id").to_owned();
        let observed = |b: &mut Browser| -> serde_json::Value {
            let text = b.eval(
                &session,
                "document.getElementById('observed') ? document.getElementById('observed').textContent : '{}'",
            );
            serde_json::from_str(text.as_str().unwrap_or("{}")).unwrap_or_default()
        };
        // The stream image must change several times (the demo frames differ from one another).
        let deadline = Instant::now() + scaled(Duration::from_secs(30));
        let mut seen = serde_json::Value::Null;
        while seen["frames"]["cam"].as_u64().unwrap_or(0) < 3 || seen["zones"]["room"].is_null() {
            assert!(Instant::now() < deadline, "stream did not update on the page: {seen}");
            std::thread::sleep(Duration::from_millis(300));
            seen = observed(&mut b);
        }
        assert_eq!(seen["zones"]["room"], "normal", "{seen}");
        // An operator test on the zone must show up on the page without a reload.
        assert_eq!(http_post(addr, "/api/zones/room/test-start").0, 202);
        let deadline = Instant::now() + scaled(Duration::from_secs(15));
        while observed(&mut b)["zones"]["room"] != "test" {
            assert!(Instant::now() < deadline, "zone change did not appear on the page");
            std::thread::sleep(Duration::from_millis(200));
        }
        let shown = b.eval(&session, "document.querySelector('[data-zone=room] .state').textContent");
        assert_eq!(shown, "test");
        // Let a few more frames and a status poll land, then keep a picture for review.
        std::thread::sleep(Duration::from_millis(1200));
        let frames_before_shot = observed(&mut b)["frames"]["cam"].as_u64().unwrap_or(0);
        assert!(frames_before_shot >= 3);
        let png = b.call(Some(&session), "Page.captureScreenshot", serde_json::json!({"format": "png"}));
        let bytes = base64_decode(png["data"].as_str().expect("screenshot data"));
        assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
        if let Some(dir) = shot.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::write(&shot, bytes).unwrap();
        eprintln!("screenshot: {}", shot.display());
    })
    .await
    .unwrap();
    app.shutdown().await;
}
