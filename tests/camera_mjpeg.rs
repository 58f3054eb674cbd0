//! MJPEG-over-HTTP cameras against local test servers that behave well, drop mid-frame, send garbage, stall or
//! refuse; and .mjpeg file replay. Real frames from tests/fixtures/frames; short timeouts, real time.

mod common;

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use ember_edge::camera::Latest;
use ember_edge::camera::http::{HttpUrl, base64};
use ember_edge::camera::jpeg::JpegDecoder;
use ember_edge::camera::mjpeg_http::{MjpegCounters, MjpegHttp};
use ember_edge::camera::rate::Rate;
use ember_edge::camera::replay::{Replay, ReplayCounters, ReplaySet};
use ember_edge::frame::{Frame, FramePool, PixelFormat};
use ember_edge::prng::XorShift64;
use ember_edge::retry::Backoff;
use ember_edge::telemetry::{Counter, Health, Registry};

const MAX: usize = 640;

fn fixtures() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/frames");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    paths.sort();
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

fn pixel_hash(px: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    px.hash(&mut h);
    h.finish()
}

/// Hashes of the fixtures' pixels as the cameras decode them (at analysis scale): every delivered frame must be
/// one of them.
fn reference_hashes(frames: &[Vec<u8>]) -> Vec<u64> {
    let mut d = JpegDecoder::new();
    let mut out = vec![0u8; MAX * MAX * 3];
    frames
        .iter()
        .map(|j| {
            let f = d.decode_analysis(j, &mut out, MAX, MAX).unwrap();
            pixel_hash(&out[..f.width * f.height * 3])
        })
        .collect()
}

fn part(boundary: &str, jpeg: &[u8]) -> Vec<u8> {
    let mut p =
        format!("--{boundary}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n", jpeg.len()).into_bytes();
    p.extend_from_slice(jpeg);
    p.extend_from_slice(b"\r\n");
    p
}

const HEAD: &str =
    "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\nCache-Control: no-cache\r\n\r\n";

/// A local camera: accepts connections, reads each request, records when it came and what it said, and
/// hands the connection (numbered from 0) to `behave`.
struct Server {
    addr: SocketAddr,
    accepts: Arc<Mutex<Vec<Instant>>>,
    requests: Arc<Mutex<Vec<String>>>,
}

async fn server<F, Fut>(behave: F) -> Server
where
    F: Fn(usize, TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepts = Arc::new(Mutex::new(Vec::new()));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let (a, r) = (Arc::clone(&accepts), Arc::clone(&requests));
    tokio::spawn(async move {
        let mut k = 0;
        while let Ok((mut s, _)) = listener.accept().await {
            a.lock().unwrap().push(Instant::now());
            let mut req = Vec::new();
            let mut b = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match tokio::time::timeout(Duration::from_secs(2), s.read(&mut b)).await {
                    Ok(Ok(n)) if n > 0 => req.extend_from_slice(&b[..n]),
                    _ => break,
                }
            }
            r.lock().unwrap().push(String::from_utf8_lossy(&req).into_owned());
            tokio::spawn(behave(k, s));
            k += 1;
        }
    });
    Server { addr, accepts, requests }
}

/// A well-behaved camera: the fixtures in a loop every 10 ms until the client goes away.
async fn good_stream(mut s: TcpStream, frames: Arc<Vec<Vec<u8>>>) {
    if s.write_all(HEAD.as_bytes()).await.is_err() {
        return;
    }
    for i in 0.. {
        if s.write_all(&part("frame", &frames[i % frames.len()])).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Cam {
    counters: MjpegCounters,
    delivered: Arc<Mutex<Vec<(u64, u64)>>>,
    stop: CancellationToken,
    rate: Arc<Rate>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Cam {
    fn delivered(&self) -> Vec<(u64, u64)> {
        self.delivered.lock().unwrap().clone()
    }
    fn errors(&self, kind: &str) -> u64 {
        let i = ember_edge::camera::mjpeg_http::End::KINDS.iter().position(|k| *k == kind).unwrap();
        self.counters.errors[i].get()
    }
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task).await.expect("source stops").unwrap().unwrap();
    }
}

struct Opts {
    url: String,
    fps: f64,
    stall: Duration,
    backoff: Backoff,
}

impl Opts {
    fn new(addr: SocketAddr) -> Self {
        Opts {
            url: format!("http://{addr}/video"),
            fps: 1000.0,
            // Scaled: under qemu-user a slow decode must not look like a stalled camera.
            stall: common::scaled(Duration::from_millis(300)),
            backoff: Backoff::new(ms(10), ms(100)).healthy_after(Duration::from_secs(10)).seed(1),
        }
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn start(o: Opts) -> Cam {
    let reg = Registry::new();
    let frames = ReplayCounters {
        captured: Counter::default(),
        decode_errors: Counter::default(),
        pool_exhausted: Counter::default(),
    };
    let counters = MjpegCounters::register(&reg, "ipcam", frames);
    let out = Arc::new(Latest::new(Counter::default()));
    let rate = Arc::new(Rate::new(o.fps));
    let source = MjpegHttp {
        camera: 0,
        name: "ipcam".into(),
        url: HttpUrl::parse(&o.url).unwrap(),
        rate: Arc::clone(&rate),
        max_width: MAX,
        max_height: MAX,
        max_jpeg_bytes: 1 << 20,
        max_denom: 8,
        connect_timeout: ms(500),
        stall_timeout: o.stall,
        backoff: o.backoff,
        pool: FramePool::new(3, PixelFormat::Rgb24.frame_len(MAX, MAX)),
        out: Arc::clone(&out),
        counters: counters.clone(),
    };
    let stop = CancellationToken::new();
    let part = Health::new().register("camera:ipcam", None);
    let task = tokio::spawn(source.run(part, stop.clone()));
    let delivered = Arc::new(Mutex::new(Vec::new()));
    let (d, s) = (Arc::clone(&delivered), stop.clone());
    tokio::spawn(async move {
        loop {
            let f: Frame = tokio::select! {
                _ = s.cancelled() => return,
                f = out.take() => f,
            };
            d.lock().unwrap().push((f.meta.seq, pixel_hash(f.pixels())));
        }
    });
    Cam { counters, delivered, stop, rate, task }
}

async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + common::scaled(limit);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(ms(10)).await;
    }
}

fn assert_all_known(cam: &Cam, refs: &[u64]) {
    let d = cam.delivered();
    assert!(d.iter().all(|(_, h)| refs.contains(h)), "a delivered frame is not one of the fixtures");
    assert!(d.windows(2).all(|w| w[0].0 < w[1].0), "sequence numbers must increase");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_arrive_with_basic_auth() {
    let frames = Arc::new(fixtures());
    let refs = reference_hashes(&frames);
    let f = Arc::clone(&frames);
    let srv = server(move |_, s| good_stream(s, Arc::clone(&f))).await;
    let mut o = Opts::new(srv.addr);
    o.url = format!("http://viewer:s3cr%3At@{}/video?res=vga", srv.addr);
    let cam = start(o);
    // The newest-wins mailbox may drop some frames if the reader is slow; over a few loops every fixture gets
    // through.
    wait_for("every fixture delivered", Duration::from_secs(20), || {
        let d = cam.delivered();
        refs.iter().all(|r| d.iter().any(|(_, h)| h == r))
    })
    .await;
    let req = srv.requests.lock().unwrap()[0].clone();
    assert!(req.starts_with("GET /video?res=vga HTTP/1.1\r\n"), "{req}");
    assert!(req.contains(&format!("Host: {}\r\n", srv.addr)), "{req}");
    assert!(req.contains(&format!("Authorization: Basic {}\r\n", base64(b"viewer:s3cr:t"))), "{req}");
    assert_all_known(&cam, &refs);
    let c = &cam.counters;
    assert_eq!(c.decode_errors.get(), 0);
    assert_eq!((c.truncated.get(), c.oversized.get(), c.garbage_bytes.get(), c.reconnects.get()), (0, 0, 0, 0));
    assert_eq!(c.connected.get(), 1.0);
    assert!(c.bytes.get() > frames.iter().map(|f| f.len() as u64).sum::<u64>());
    cam.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_transfer_and_frames_without_huffman_tables() {
    let frames: Vec<Vec<u8>> = fixtures().iter().take(3).map(|j| common::strip_dht(j)).collect();
    let refs = reference_hashes(&fixtures()[..3]);
    let frames = Arc::new(frames);
    let f = Arc::clone(&frames);
    let srv = server(move |_, mut s| {
        let f = Arc::clone(&f);
        async move {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary=--frame\r\nTransfer-Encoding: chunked\r\n\r\n";
            if s.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for i in 0.. {
                let body = part("frame", &f[i % f.len()]);
                // Uneven chunks, so chunk and part boundaries never line up.
                for piece in body.chunks(777 + 13 * (i % 7)) {
                    let mut c = format!("{:x}\r\n", piece.len()).into_bytes();
                    c.extend_from_slice(piece);
                    c.extend_from_slice(b"\r\n");
                    if s.write_all(&c).await.is_err() {
                        return;
                    }
                }
                tokio::time::sleep(ms(10)).await;
            }
        }
    })
    .await;
    let cam = start(Opts::new(srv.addr));
    wait_for("DHT-less frames decoded", Duration::from_secs(10), || {
        let d = cam.delivered();
        refs.iter().all(|r| d.iter().any(|(_, h)| h == r))
    })
    .await;
    assert_all_known(&cam, &refs);
    assert_eq!(cam.counters.decode_errors.get(), 0);
    assert_eq!(cam.errors("protocol"), 0);
    cam.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_mid_frame_reconnects_and_never_delivers_the_cut_frame() {
    let frames = Arc::new(fixtures());
    let refs = reference_hashes(&frames);
    let f = Arc::clone(&frames);
    let srv = server(move |k, mut s| {
        let f = Arc::clone(&f);
        async move {
            if k == 0 {
                let mut body = HEAD.as_bytes().to_vec();
                body.extend_from_slice(&part("frame", &f[0]));
                body.extend_from_slice(&part("frame", &f[1]));
                let third = part("frame", &f[2]);
                body.extend_from_slice(&third[..third.len() / 2]);
                let _ = s.write_all(&body).await;
                let _ = s.shutdown().await;
                // Closed in the middle of the third part.
            } else {
                good_stream(s, f).await;
            }
        }
    })
    .await;
    let cam = start(Opts::new(srv.addr));
    wait_for("frames after the reconnect", Duration::from_secs(10), || {
        cam.counters.reconnects.get() >= 1 && cam.counters.captured.get() >= 6
    })
    .await;
    let c = &cam.counters;
    assert_eq!(c.truncated.get(), 1);
    assert_eq!(cam.errors("closed"), 1);
    assert_eq!(c.decode_errors.get(), 0, "the cut frame must never reach the decoder");
    assert!(srv.accepts.lock().unwrap().len() >= 2);
    assert_all_known(&cam, &refs);
    cam.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_servers_are_counted_and_the_source_recovers() {
    let frames = Arc::new(fixtures());
    let refs = reference_hashes(&frames);
    let f = Arc::clone(&frames);
    let html = "<html><head><title>Error</title></head><body><h1>Something broke</h1></body></html>\r\n";
    let srv = server(move |k, mut s| {
        let f = Arc::clone(&f);
        async move {
            let mut x = XorShift64::new(0x1234_5678_9ABC_DEF0u64 ^ k as u64);
            let mut random = |n: usize| -> Vec<u8> { (0..n).map(|_| x.next() as u8).collect() };
            let reply: Vec<u8> = match k {
                // Not HTTP at all.
                0 => random(5000),
                // A server error with an HTML page.
                1 => format!(
                    "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{html}",
                    html.len()
                )
                .into_bytes(),
                // 200, but an HTML page instead of a stream, then closed.
                2 => format!("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n{html}").into_bytes(),
                // 200 with a boundary that the body does not use, HTML and random bytes between two good
                // parts, then random bytes forever: no frames, so it counts as a stall.
                3 => {
                    let mut b = HEAD.as_bytes().to_vec();
                    b.extend_from_slice(&part("wrong", &f[0]));
                    b.extend_from_slice(html.as_bytes());
                    b.extend_from_slice(&part("wrong", &f[1]));
                    b
                }
                _ => return good_stream(s, f).await,
            };
            if s.write_all(&reply).await.is_err() {
                return;
            }
            if k == 3 {
                for _ in 0..200 {
                    let mut junk = random(512);
                    junk.iter_mut().filter(|b| **b == 0xFF).for_each(|b| *b = 0);
                    if s.write_all(&junk).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(ms(20)).await;
                }
            }
            let _ = s.shutdown().await;
        }
    })
    .await;
    let cam = start(Opts::new(srv.addr));
    wait_for("frames from the good server", Duration::from_secs(15), || {
        srv.accepts.lock().unwrap().len() >= 5 && cam.counters.captured.get() >= 10
    })
    .await;
    let c = &cam.counters;
    assert_eq!(cam.errors("protocol"), 1, "random bytes are not HTTP");
    assert_eq!(cam.errors("status"), 1, "HTTP 500");
    assert!(cam.errors("closed") >= 1, "the HTML page ended the stream");
    assert_eq!(cam.errors("stall"), 1, "bytes but no frames for 2 x stall_timeout");
    assert!(c.garbage_bytes.get() >= 2 * html.len() as u64, "{}", c.garbage_bytes.get());
    assert_eq!(c.decode_errors.get(), 0);
    assert!(c.reconnects.get() >= 4);
    // Both parts behind the wrong boundary came through, then the good server's.
    assert_all_known(&cam, &refs);
    cam.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalls_are_detected_and_reconnected() {
    let frames = Arc::new(fixtures());
    let f = Arc::clone(&frames);
    let hold = CancellationToken::new();
    let h = hold.clone();
    let srv = server(move |k, mut s| {
        let (f, h) = (Arc::clone(&f), h.clone());
        async move {
            match k {
                // Accepts, then says nothing.
                0 => {}
                // One frame, then silence in the middle of the stream.
                1 => {
                    let mut b = HEAD.as_bytes().to_vec();
                    b.extend_from_slice(&part("frame", &f[0]));
                    let _ = s.write_all(&b).await;
                }
                // A head trickled a byte at a time, never finished: bytes keep coming, but no response.
                2 => {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\n").await;
                    while s.write_all(b"X").await.is_ok() {
                        tokio::select! {
                            _ = h.cancelled() => break,
                            _ = tokio::time::sleep(ms(50)) => {}
                        }
                    }
                }
                _ => return good_stream(s, f).await,
            }
            // Keep the socket open (silent) until the test ends.
            h.cancelled().await;
            drop(s);
        }
    })
    .await;
    let stall = common::scaled(ms(300));
    let mut o = Opts::new(srv.addr);
    o.stall = stall;
    let cam = start(o);
    wait_for("the fourth connection streams", Duration::from_secs(10), || {
        srv.accepts.lock().unwrap().len() >= 4 && cam.counters.captured.get() >= 3
    })
    .await;
    assert_eq!(cam.errors("stall"), 3);
    let accepts = srv.accepts.lock().unwrap().clone();
    // Each silent connection was held for at least the stall timeout before the next attempt.
    assert!(accepts[1] - accepts[0] >= stall, "{:?}", accepts[1] - accepts[0]);
    assert!(accepts[2] - accepts[1] >= stall, "{:?}", accepts[2] - accepts[1]);
    // The trickled head is cut off after twice the stall timeout.
    assert!(accepts[3] - accepts[2] >= stall * 2, "{:?}", accepts[3] - accepts[2]);
    hold.cancel();
    cam.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_grows_between_failed_connects() {
    // Every connection is answered with 503 and closed.
    let srv = server(|_, mut s| async move {
        let _ = s.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n").await;
    })
    .await;
    let backoff = Backoff::new(ms(40), ms(1000)).healthy_after(Duration::from_secs(10)).seed(99);
    let mut expected = backoff.clone();
    let mut ceilings = vec![];
    let delays: Vec<Duration> = (0..6)
        .map(|_| {
            ceilings.push(expected.ceiling().as_millis());
            expected.failed(None).delay
        })
        .collect();
    assert_eq!(ceilings, [40, 80, 160, 320, 640, 1000]);
    let mut o = Opts::new(srv.addr);
    o.backoff = backoff;
    let cam = start(o);
    wait_for("seven attempts", Duration::from_secs(20), || srv.accepts.lock().unwrap().len() >= 7).await;
    let accepts = srv.accepts.lock().unwrap().clone();
    for (k, d) in delays.iter().enumerate() {
        let gap = accepts[k + 1] - accepts[k];
        // The source waited the jittered delay of its seeded backoff: never less, and not much more.
        assert!(gap >= *d, "attempt {k}: gap {gap:?} < delay {d:?}");
        assert!(gap < *d + common::scaled(ms(1000)), "attempt {k}: gap {gap:?} for delay {d:?}");
    }
    assert!(cam.errors("status") >= 6);
    assert!(cam.counters.reconnects.get() >= 6);
    assert_eq!(cam.counters.captured.get(), 0);
    cam.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_beyond_the_rate_are_skipped_not_decoded() {
    let frames = Arc::new(fixtures());
    let f = Arc::clone(&frames);
    let sent = 40u64;
    let hold = CancellationToken::new();
    let h = hold.clone();
    let srv = server(move |_, mut s| {
        let (f, h) = (Arc::clone(&f), h.clone());
        async move {
            let mut b = HEAD.as_bytes().to_vec();
            for i in 0..sent as usize {
                b.extend_from_slice(&part("frame", &f[i % f.len()]));
            }
            let _ = s.write_all(&b).await;
            h.cancelled().await;
        }
    })
    .await;
    let mut o = Opts::new(srv.addr);
    o.fps = 1.0;
    o.stall = ms(5000);
    let cam = start(o);
    wait_for("all parts framed", Duration::from_secs(10), || cam.counters.parts.get() == sent).await;
    let c = &cam.counters;
    let handled = c.captured.get() + c.skipped.get() + c.pool_exhausted.get() + c.decode_errors.get();
    assert_eq!(handled, sent);
    // The burst arrives within well under a second: at 1 fps only the first one or two are decoded.
    assert!(
        c.captured.get() >= 1 && c.skipped.get() >= sent - 3,
        "captured {} skipped {}",
        c.captured.get(),
        c.skipped.get()
    );
    // The rate is read per part, so a change at run time applies at once.
    cam.rate.set(50.0);
    assert_eq!(cam.rate.period(), ms(20));
    hold.cancel();
    cam.stop().await;
}

fn replay_counters() -> ReplayCounters {
    ReplayCounters {
        captured: Counter::default(),
        decode_errors: Counter::default(),
        pool_exhausted: Counter::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mjpeg_file_replays_in_order_and_loops() {
    let frames = fixtures();
    let refs = reference_hashes(&frames);
    let dir = std::env::temp_dir().join(format!("ember-mjpeg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("clip.mjpeg");
    // Concatenated JPEGs (as `ffmpeg -f mjpeg` writes), the last one cut off.
    let mut file = frames.concat();
    file.extend_from_slice(&frames[0][..frames[0].len() / 3]);
    std::fs::write(&path, &file).unwrap();

    let set = ReplaySet::open("clip.mjpeg", |p| dir.join(p)).unwrap();
    assert!(matches!(set, ReplaySet::Stream(_)));
    let counters = replay_counters();
    let (captured, errors) = (counters.captured.clone(), counters.decode_errors.clone());
    let out = Arc::new(Latest::new(Counter::default()));
    let stop = CancellationToken::new();
    let replay = Replay {
        camera: 0,
        name: "clip".into(),
        set,
        rate: Arc::new(ember_edge::camera::rate::Rate::new(100.0)),
        max_width: MAX,
        max_height: MAX,
        pool: FramePool::new(2, PixelFormat::Rgb24.frame_len(MAX, MAX)),
        out: Arc::clone(&out),
        counters,
        part: Health::new().register("camera:clip", None),
        max_jpeg_bytes: 1 << 20,
        max_denom: 8,
    };
    let task = tokio::spawn(replay.run(stop.clone()));
    let n = frames.len() * 2 + 3;
    let mut got = vec![];
    while got.len() < n {
        let f = tokio::time::timeout(common::scaled(Duration::from_secs(10)), out.take()).await.expect("frames");
        got.push(pixel_hash(f.pixels()));
        drop(f);
    }
    stop.cancel();
    task.await.unwrap().unwrap();
    // The newest-wins mailbox may drop a frame if this reader is slow, so check order, not completeness:
    // each delivered frame is the successor (cyclically, possibly skipping) of the previous one.
    let idx: Vec<usize> = got.iter().map(|h| refs.iter().position(|r| r == h).expect("a fixture")).collect();
    assert!(idx.windows(2).all(|w| w[0] != w[1] || frames.len() == 1), "{idx:?}");
    let wraps = idx.windows(2).filter(|w| w[1] < w[0]).count();
    assert!(wraps >= 2, "the file loops: {idx:?}");
    assert!(captured.get() >= n as u64);
    // The cut-off JPEG at the end is counted once per pass.
    assert!(errors.get() >= 2, "{}", errors.get());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_fields_per_source_are_validated() {
    let load = |cam: &str| {
        let text = format!("[[cameras]]\nname = \"c\"\n{cam}\n[[zones]]\nname = \"z\"\ncameras = [\"c\"]\n");
        ember_edge::config::load_str("cam.toml", &text, std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
            .map(|_| ())
            .map_err(|p| p.iter().map(|x| x.to_string()).collect::<Vec<_>>())
    };
    assert_eq!(load("source = \"mjpeg\"\nurl = \"http://u:p@10.0.0.5:8080/mjpg/video.mjpg\""), Ok(()));
    assert_eq!(load("source = \"replay\"\npath = \"builtin:demo\""), Ok(()));
    let cases = [
        ("source = \"mjpeg\"", "cam.toml:3:", "needs `url`"),
        ("source = \"mjpeg\"\nurl = \"https://cam/x\"", "cam.toml:4:", "https is not supported"),
        ("source = \"mjpeg\"\nurl = \"http://cam:99999/\"", "cam.toml:4:", "invalid port"),
        (
            "source = \"mjpeg\"\nurl = \"http://cam/\"\npath = \"x\"",
            "cam.toml:5:",
            "`path` is only for source = \"replay\"",
        ),
        ("source = \"replay\"", "cam.toml:3:", "needs `path`"),
        ("source = \"replay\"\npath = \"builtin:demo\"\nurl = \"http://cam/\"", "cam.toml:5:", "`url` is only for"),
        ("source = \"replay\"\npath = \"nope.mjpeg\"", "cam.toml:4:", "replay file"),
        ("source = \"mjpeg\"\nurl = \"http://cam/\"\nstall_timeout_ms = 0", "cam.toml:5:", "stall_timeout_ms must be"),
        ("source = \"mjpeg\"\nurl = \"http://cam/\"\nmax_jpeg_bytes = 10", "cam.toml:5:", "max_jpeg_bytes must be"),
        (
            "source = \"mjpeg\"\nurl = \"http://cam/\"\nreconnect_min_ms = 100\nreconnect_max_ms = 50",
            "cam.toml:5:",
            "reconnect_min_ms",
        ),
        ("source = \"mjpeg\"\nurl = \"http://cam/\"\ntimeout = 1", "cam.toml:5:", "unknown field `timeout`"),
    ];
    for (cam, at, needle) in cases {
        let err = load(cam).expect_err(cam);
        assert!(err.iter().any(|e| e.starts_with(at) && e.contains(needle)), "{cam}: {err:#?}");
    }
}

#[test]
fn app_runs_an_mjpeg_camera_and_documents_its_metrics() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let frames = Arc::new(fixtures());
        let f = Arc::clone(&frames);
        let srv = server(move |_, s| good_stream(s, Arc::clone(&f))).await;
        let extra = format!(
            "[[cameras]]\nname = \"ipcam\"\nsource = \"mjpeg\"\nurl = \"http://{}/video\"\nfps = 10.0\nmax_width = 640\nmax_height = 640\n",
            srv.addr
        );
        let loaded = common::load(&common::site_toml(&extra));
        let app = ember_edge::app::App::start(&loaded, Default::default()).await.unwrap();
        let addr = app.telemetry_addr;
        let series = |name: &str| format!("{name}{{camera=\"ipcam\"}}");
        let m = move |s: String| tokio::task::spawn_blocking(move || common::metric(addr, &s));
        let deadline = Instant::now() + common::scaled(Duration::from_secs(15));
        while m(series("ember_frames_captured_total")).await.unwrap() < 3.0 {
            assert!(Instant::now() < deadline, "no frames from the MJPEG camera");
            tokio::time::sleep(ms(50)).await;
        }
        assert!(m(series("ember_detect_frames_total")).await.unwrap() >= 1.0);
        assert_eq!(m(series("ember_camera_connected")).await.unwrap(), 1.0);
        let reference = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reference/metrics.md"),
        )
        .unwrap();
        for name in app.registry.names() {
            assert!(reference.contains(&format!("`{name}`")), "metric {name} is not in docs/reference/metrics.md");
        }
        app.shutdown().await;
    });
}
