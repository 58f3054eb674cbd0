#!/usr/bin/env python3
"""The soak with faults behind scripts/soak.sh (read its header first).

Processes: the appliance under test (`ember-edge run`); a second `ember-edge run` replaying real JPEGs as two
MJPEG cameras (the cameras' server, as scripts/bench-site.sh does); two `ember-edge simulate sensor` devices
(thermal frames, one on fire); two smoke devices driven from here (a zone alarm and its reset every few seconds,
so alerts flow all the time); `ember-tools collect`; mosquitto when the uplink goes over MQTT; curl viewers.

Each fault has its own clock: up for a random 6..30 s, then down for a random 2..15 s, all drawn from one
seeded generator (the seed is printed; --seed repeats a run's schedule). The broker is stopped with SIGTERM only:
a broker killed outright loses the QoS 1 messages it acknowledged but had not saved yet, which is the broker's
configuration, not the appliance's (docs/guide.md). Everything else is killed with SIGKILL or SIGTERM at random.
"""

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

# Flatness tolerances (stated here and in the summary): the median of the last third of the samples against the
# median of the first third, after the warm-up.
RSS_TOLERANCE_BYTES = 2 << 20
RSS_TOLERANCE_FRACTION = 0.10
FD_TOLERANCE = 3
DEVICE_ID = 903


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg):
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Http:
    def __init__(self, addr):
        self.base = f"http://{addr}"

    def get(self, path, timeout=5.0):
        try:
            with urllib.request.urlopen(self.base + path, timeout=timeout) as r:
                return r.status, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")
        except OSError:
            return 0, ""

    def post(self, path):
        # http.client, not urllib: urllib labels an empty body as a form, which the appliance refuses (415).
        host, port = self.base[len("http://"):].rsplit(":", 1)
        try:
            c = http.client.HTTPConnection(host, int(port), timeout=5.0)
            c.request("POST", path, headers={"Content-Length": "0"})
            status = c.getresponse().status
            c.close()
            return status
        except OSError:
            return 0

    def metrics(self):
        status, body = self.get("/metrics")
        if status != 200:
            return None
        m = {}
        for line in body.splitlines():
            if not line or line.startswith("#"):
                continue
            name, _, value = line.rpartition(" ")
            try:
                m[name] = float(value)
            except ValueError:
                pass
        return m


def total(m, name):
    """Sum of a metric over its labels (0 when absent)."""
    return sum(v for k, v in m.items() if k == name or k.startswith(name + "{"))


class Procs:
    """Child processes by name; each one's output goes to its own log file."""

    def __init__(self, out):
        self.out = out
        self.p = {}

    def start(self, name, argv, stdout=None):
        logf = open(os.path.join(self.out, f"{name}.log"), "ab")
        self.p[name] = subprocess.Popen(argv, stdout=stdout or logf, stderr=logf, stdin=subprocess.DEVNULL)
        logf.close()
        return self.p[name]

    def stop(self, name, sig=signal.SIGTERM):
        p = self.p.pop(name, None)
        if p is None:
            return
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def alive(self, name):
        p = self.p.get(name)
        return p is not None and p.poll() is None

    def stop_all(self):
        for name in list(self.p):
            self.stop(name)


def wait_until(what, cond, secs):
    deadline = time.time() + secs
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    log(f"timed out waiting for {what}")
    return False


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class SmokeDevice(threading.Thread):
    """A smoke device driven from here: a reading every second (varied, so the channel never looks static), and
    every few seconds smoke at its alarm level, then clear air and a reset of its zone: two alerts a cycle."""

    def __init__(self, name, loc_id, zone, port, http, rng):
        super().__init__(daemon=True)
        self.name, self.loc_id, self.zone, self.port, self.http = name, loc_id, zone, port, http
        self.rng = random.Random(rng.random())
        self.down = threading.Event()  # set: disconnected (a fault)
        self.cycling = threading.Event()  # set: alarms and resets; clear: quiet readings only
        self.cycling.set()
        self.stopping = threading.Event()
        self.cycles = 0
        self.resets = 0

    def run(self):
        sock = None
        next_alarm = time.time() + self.rng.uniform(2, 5)
        while not self.stopping.is_set():
            if self.down.is_set():
                if sock:
                    sock.close()
                    sock = None
                time.sleep(0.2)
                continue
            try:
                if sock is None:
                    sock = socket.create_connection(("127.0.0.1", self.port), timeout=2)
                    sock.sendall(f"#locid:{self.loc_id}!\n".encode())
                if self.cycling.is_set() and time.time() >= next_alarm:
                    sock.sendall(b"#Sensor:ADC1=3500,ADC2=1300!\n")
                    time.sleep(1.0)
                    sock.sendall(f"#Sensor:ADC1={self.rng.randint(250, 320)},ADC2=1300!\n".encode())
                    if self.http.post(f"/api/zones/{self.zone}/reset") == 202:
                        self.resets += 1
                    self.cycles += 1
                    next_alarm = time.time() + self.rng.uniform(1.5, 5)
                else:
                    sock.sendall(f"#Sensor:ADC1={self.rng.randint(250, 320)},ADC2=1300!\n".encode())
                time.sleep(1.0)
            except OSError:
                if sock:
                    sock.close()
                sock = None
                time.sleep(0.5)
        if sock:
            sock.close()


class Fault:
    """One kind of fault with its own clock: up for a random while, then down for a random while."""

    def __init__(self, name, rng, inject, restore, during=None):
        self.name, self.rng, self.inject, self.restore, self.during = name, rng, inject, restore, during
        self.down = False
        self.count = 0
        self.down_secs = 0.0
        self.since = time.time()
        self.next = time.time() + rng.uniform(3, 20)

    def tick(self, now):
        if now < self.next:
            if self.down and self.during:
                self.during()
            return
        if self.down:
            self.restore()
            self.down = False
            self.down_secs += now - self.since
            self.next = now + self.rng.uniform(6, 30)
        else:
            how = self.inject()
            log(f"fault: {self.name} {how}")
            self.count += 1
            self.down = True
            self.since = now
            self.next = now + self.rng.uniform(2, 15)

    def end(self):
        if self.down:
            self.restore()
            self.down = False
            self.down_secs += time.time() - self.since


def fd_targets(pid):
    """What each open fd of `pid` points at, sorted. An fd closed between listing and reading (a camera client
    reconnecting, say) is skipped: the appliance never stops opening and closing sockets."""
    out = []
    for n in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{n}"))
        except FileNotFoundError:
            pass
    return sorted(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--duration", type=float, default=240)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--transport", choices=["auto", "tcp", "mqtt"], default="auto")
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 32)
    rng = random.Random(seed)
    edge, tools = os.path.join(a.bin, "ember-edge"), os.path.join(a.bin, "ember-tools")
    out = os.path.abspath(a.out)
    mosquitto = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)
    transport = a.transport
    if transport == "auto":
        transport = "mqtt" if mosquitto else "tcp"
    if transport == "mqtt" and not mosquitto:
        sys.exit("soak: --transport mqtt needs mosquitto")
    log(f"seed {seed} (repeat this schedule with --seed {seed}); duration {a.duration:.0f} s; uplink over {transport}")
    if transport == "tcp":
        log("note: no MQTT broker in this run (mosquitto " + ("not installed" if not mosquitto else "not asked for") + "): the broker fault is skipped")

    # Leftovers of an earlier run: its tmpfs, then its files.
    spool_fs = os.path.join(out, "disk")
    if os.path.ismount(spool_fs):
        subprocess.run(["umount", spool_fs], check=False)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(spool_fs)
    disk_fault = False
    if os.geteuid() == 0:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", spool_fs], capture_output=True)
        disk_fault = r.returncode == 0
        if not disk_fault:
            log(f"note: cannot mount a tmpfs for the spool ({r.stderr.decode().strip()}): the disk-full fault is skipped")
    else:
        log("note: not root, no tmpfs for the spool: the disk-full fault is skipped (filling this machine's own disk is not an option)")

    procs = Procs(out)
    failures = []
    try:
        run(a, rng, seed, edge, tools, out, spool_fs, disk_fault, transport, mosquitto, procs, failures)
    finally:
        procs.stop_all()
        if disk_fault:
            subprocess.run(["umount", spool_fs], check=False)
    if failures:
        print("\nSOAK FAILED:")
        for f in failures:
            print(f"  - {f}")
        sys.exit(1)
    print("\nSOAK PASSED")


def run(a, rng, seed, edge, tools, out, spool_fs, disk_fault, transport, mosquitto, procs, failures):
    tport, sport, cam_port, col_port, mqtt_port = (free_port() for _ in range(5))
    http = Http(f"127.0.0.1:{tport}")
    alerts_path = os.path.join(out, "alerts.jsonl")

    # The cameras' server: real frames replayed as live MJPEG streams.
    subprocess.run([tools, "bench", "camera", "--sizes", "640x480", "--frames", "1", "--write-jpegs",
                    os.path.join(out, "jpegs")], check=True, stdout=subprocess.DEVNULL)
    cams = "".join(f'[[cameras]]\nname = "cam{i}"\nsource = "replay"\npath = "jpegs/640x480"\nfps = 2.0\n'
                   f'max_width = 640\nmax_height = 480\n' for i in (1, 2))
    with open(os.path.join(out, "cameras.toml"), "w") as f:
        f.write(f'[site]\ndevice_id = 904\nname = "soak-cameras"\n[telemetry]\nlisten = "127.0.0.1:{cam_port}"\n'
                f'max_viewers = 8\n[sensors]\nlisten = []\n{cams}[[zones]]\nname = "cams"\ncameras = ["cam1", "cam2"]\n'
                f'[uplink]\nenabled = false\n[collector]\nenabled = false\n')

    def cameras_up():
        procs.start("cameras", [edge, "run", "--config", os.path.join(out, "cameras.toml")])
        wait_until("the cameras' server", lambda: port_open(cam_port), 20)

    def cameras_down():
        sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
        procs.stop("cameras", sig)
        return f"down ({signal.Signals(sig).name})"

    # The broker (MQTT only): sessions and queues saved across restarts, no limit on a subscriber's queue (the
    # collector may be away longer than the appliance), as docs/guide.md asks of a site's broker.
    mconf = os.path.join(out, "mosquitto.conf")
    if transport == "mqtt":
        os.makedirs(os.path.join(out, "mqtt-db"))
        with open(mconf, "w") as f:
            f.write(f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\n"
                    f"persistence_location {out}/mqtt-db/\nautosave_interval 1\nmax_queued_messages 0\n")

    def broker_up():
        procs.start("broker", [mosquitto, "-c", mconf])
        wait_until("the broker", lambda: port_open(mqtt_port), 20)

    def broker_down():
        procs.stop("broker", signal.SIGTERM)
        return "down (SIGTERM: sessions saved)"

    def collector_up():
        if transport == "mqtt":
            procs.start("collector", [tools, "collect", "--mqtt", f"127.0.0.1:{mqtt_port}", "--out", alerts_path])
            time.sleep(0.5)
        else:
            procs.start("collector", [tools, "collect", "--listen", f"127.0.0.1:{col_port}", "--out", alerts_path])
            wait_until("the collector", lambda: port_open(col_port), 20)

    def collector_down():
        sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
        procs.stop("collector", sig)
        return f"down ({signal.Signals(sig).name})"

    server = f"127.0.0.1:{mqtt_port}" if transport == "mqtt" else f"127.0.0.1:{col_port}"
    disk = spool_fs
    devices = "".join(
        f'[[sensors.devices]]\nname = "{n}"\nloc_id = "{loc}"\neeprom_refresh_secs = 0.0\n'
        for n, loc in (("smoke-a", "soak-a"), ("smoke-b", "soak-b"), ("thermal-a", "5101"), ("thermal-b", "5102")))
    cameras = "".join(
        f'[[cameras]]\nname = "cam{i}"\nsource = "mjpeg"\nurl = "http://127.0.0.1:{cam_port}/cameras/cam{i}/stream.mjpg"\n'
        f'fps = 2.0\ndetector = "grid"\nmax_width = 640\nmax_height = 480\n' for i in (1, 2))
    config = f"""# Written by scripts/soak.py.
[site]
device_id = {DEVICE_ID}
name = "soak"
[telemetry]
listen = "127.0.0.1:{tport}"
max_viewers = 16
[sensors]
listen = ["127.0.0.1:{sport}"]
offline_after_secs = 5
{devices}{cameras}
[[zones]]
name = "a"
cameras = ["cam1"]
devices = ["smoke-a", "thermal-a"]
smoke_readings = 1
smoke_alone_alarms = true
[[zones]]
name = "b"
cameras = ["cam2"]
devices = ["smoke-b", "thermal-b"]
smoke_readings = 1
smoke_alone_alarms = true
[uplink]
enabled = true
transport = "{transport}"
server = "{server}"
reconnect_min_ms = 100
reconnect_max_ms = 2000
heartbeat_secs = 2
spool_dir = "{disk}/spool"
events_dir = "{disk}/events"
snapshots_dir = "{out}/snapshots"
spool_max_bytes = 65536
events_max_bytes = 65536
snapshots_max_bytes = 1048576
snapshots_max_count = 8
fsync = "always"
[collector]
enabled = false
"""
    cfg = os.path.join(out, "soak.toml")
    with open(cfg, "w") as f:
        f.write(config)
    subprocess.run([edge, "check-config", cfg], check=True)

    if transport == "mqtt":
        broker_up()
    collector_up()
    cameras_up()
    app = procs.start("appliance", [edge, "run", "--config", cfg])
    if not wait_until("the appliance", lambda: http.get("/health")[0] in (200, 503) and not http.get("/health")[1].startswith("starting"), 30):
        failures.append("the appliance did not come up")
        return

    def sim_up(name):
        loc, scenario = {"thermal-a": ("5101", "fire"), "thermal-b": ("5102", "idle")}[name]
        procs.start(name, [edge, "simulate", "sensor", "--connect", f"127.0.0.1:{sport}", "--loc-id", loc,
                           "--serial", f"SOAK{loc}", "--interval", "1", "--scenario", scenario, "--fire-after", "5"])

    for n in ("thermal-a", "thermal-b"):
        sim_up(n)
    smoke = [SmokeDevice("smoke-a", "soak-a", "a", sport, http, rng), SmokeDevice("smoke-b", "soak-b", "b", sport, http, rng)]
    for d in smoke:
        d.start()

    # Warm-up: every source connected, the first alerts through; then the quiet baseline (no viewers, no fault).
    warm = max(20.0, min(60.0, a.duration * 0.1))
    log(f"warm-up {warm:.0f} s")
    # Every path once before the baseline (a plain and an overlay viewer per camera: the overlay's buffers are
    # grown on its first viewer), so that the flatness check compares steady states.
    time.sleep(5)  # the cameras connected first
    warmers = [subprocess.Popen(["curl", "-s", "-N", "--max-time", f"{warm / 2:.0f}", "-o", "/dev/null",
                                 f"{http.base}/cameras/{c}/stream.mjpg{q}"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL) for c in ("cam1", "cam2") for q in ("", "?overlay=1")]
    time.sleep(warm - 5)
    for w in warmers:
        w.wait()

    def sample(m):
        with open(f"/proc/{app.pid}/status") as f:
            rss = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))
        fds = len(os.listdir(f"/proc/{app.pid}/fd"))
        # The fds that come and go with the faults and the viewers (one socket each), taken out for the flatness
        # check during the run; what is left (listeners, files, the runtime's own) must not grow.
        moving = sum(total(m or {}, k) for k in ("ember_live_viewers", "ember_sensor_connections_active",
                                                 "ember_camera_connected", "ember_uplink_connected"))
        return {"t": time.time(), "rss": rss, "fds": fds, "fds_fixed": fds - int(moving),
                "threads": total(m, "ember_process_threads") if m else 0}

    wait_until("a healthy appliance before the faults", lambda: http.get("/health")[0] == 200, 30)
    base = sample(http.metrics())
    base_fds = fd_targets(app.pid)
    log(f"baseline: RSS {base['rss'] / 2**20:.1f} MiB, {base['fds']} fds")

    # The faults.
    def device_down():
        which = rng.choice(["smoke-a", "smoke-b", "thermal-a", "thermal-b"])
        state["device_down"] = which
        if which.startswith("smoke"):
            next(d for d in smoke if d.name == which).down.set()
            return f"{which} disconnected"
        sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
        procs.stop(which, sig)
        return f"{which} disconnected ({signal.Signals(sig).name})"

    def device_up():
        which = state.pop("device_down")
        if which.startswith("smoke"):
            next(d for d in smoke if d.name == which).down.clear()
        else:
            sim_up(which)

    filler = os.path.join(spool_fs, "filler")

    def top_up():
        # Everything the tmpfs still takes, in writes of a page and then of single bytes, so the last partial
        # page fills too. Called again while the fault lasts: the spool deletes acknowledged segments, and the
        # pages they free must not let it write again.
        n = 0
        with open(filler, "ab", buffering=0) as f:
            for chunk in (b"\0" * 4096, b"\0"):
                try:
                    while True:
                        n += f.write(chunk)
                except OSError:
                    pass
        return n

    def disk_full():
        n = top_up()
        state["disk_full_since"] = time.time()
        return f"full ({n >> 10} KiB filler)"

    def disk_free():
        os.remove(filler)
        state["disk_full_periods"].append((state.pop("disk_full_since"), time.time()))

    state = {"disk_full_periods": []}
    faults = [Fault("cameras", rng, cameras_down, cameras_up), Fault("device", rng, device_down, device_up),
              Fault("collector", rng, collector_down, collector_up)]
    if transport == "mqtt":
        faults.append(Fault("broker", rng, broker_down, broker_up))
    if disk_fault:
        faults.append(Fault("disk", rng, disk_full, disk_free, top_up))

    viewers = []
    viewer_count = 0
    samples = []
    troubles_seen = {}
    loss_seen_in_health = False
    t_end = time.time() + a.duration
    next_sample = time.time()
    next_viewer = time.time()
    next_health = time.time()
    log(f"faults: {', '.join(f.name for f in faults)}; viewers churning")
    while time.time() < t_end:
        now = time.time()
        for f in faults:
            f.tick(now)
        viewers = [v for v in viewers if v.poll() is None]
        if now >= next_viewer and len(viewers) < 4:
            cam = rng.choice(["cam1", "cam2"])
            q = "?overlay=1" if rng.random() < 0.3 else ""
            viewers.append(subprocess.Popen(
                ["curl", "-s", "-N", "--max-time", f"{rng.uniform(1, 10):.1f}", "-o", "/dev/null",
                 f"{http.base}/cameras/{cam}/stream.mjpg{q}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            viewer_count += 1
            # Some viewers vanish without closing (killed browser): the appliance must notice and free the slot.
            if rng.random() < 0.2:
                v = viewers[-1]
                threading.Timer(rng.uniform(0.5, 4), lambda v=v: v.poll() is None and v.kill()).start()
            next_viewer = now + rng.uniform(0.5, 4)
        if now >= next_health:
            # /health every second (it is tiny): a spool trouble on a full disk may last only that long, since the
            # spool's own deletions of acknowledged segments free pages on it.
            hs, hb = http.get("/health")
            for part in (hb.split(": ", 1)[1].split(", ") if hs == 503 and ": " in hb else []):
                if part.startswith("uplink"):
                    key = "uplink: " + ("alerts lost" if "lost" in part else "alert spool" if "spool" in part else part[:40])
                    troubles_seen[key] = troubles_seen.get(key, 0) + 1
                    loss_seen_in_health |= "lost" in part
            next_health = now + 1
        if now >= next_sample:
            m = http.metrics()
            s = sample(m)
            s["health"] = http.get("/health")[0]
            # /api/status lists every trouble: /health's failing parts plus device faults and stalled cameras.
            try:
                listed = json.loads(http.get("/api/status")[1]).get("trouble", [])
            except ValueError:
                listed = []
            for t in listed:
                if not t.startswith("uplink"):  # the uplink's come from /health above, every second
                    key = re.sub(r"\d+", "N", t)[:60]
                    troubles_seen[key] = troubles_seen.get(key, 0) + 1
            samples.append(s)
            next_sample = now + 5
        time.sleep(0.2)

    # The end: every fault mended, viewers gone, the smoke devices quiet but connected.
    log("faults end; draining")
    for f in faults:
        f.end()
    for v in viewers:
        v.terminate()
        v.wait()
    for d in smoke:
        d.cycling.clear()
    time.sleep(2)
    http.post("/api/zones/all/reset")
    time.sleep(3)
    m = None

    def drained():
        nonlocal m
        m = http.metrics()
        return bool(m) and m.get("ember_uplink_pending") == 0 and m.get("ember_uplink_memory_alerts") == 0
    drain_ok = wait_until("the uplink to drain", drained, 180)
    def status_trouble():
        try:
            return json.loads(http.get("/api/status")[1]).get("trouble", ["(no answer)"])
        except ValueError:
            return ["(no answer)"]

    # Cameras reconnect with backoff (up to seconds) and then need a frame; viewers' sockets close on the next write.
    healthy = wait_until("/health 200 and no trouble in /api/status",
                         lambda: http.get("/health")[0] == 200 and not status_trouble(), 90)
    wait_until("no live viewer left", lambda: total(http.metrics() or {"x": 1}, "ember_live_viewers") == 0, 30)
    time.sleep(5)  # the collector writes before it acknowledges; its last lines are on disk by now
    m = http.metrics() or {}
    status, health_body = http.get("/health")
    _, events_body = http.get("/api/events?limit=1000&newest=1")
    _, status_body = http.get("/api/status")
    end = sample(m)
    fd_list = fd_targets(app.pid)
    with open(os.path.join(out, "fds-at-rest.txt"), "w") as f:
        f.write("before the faults:\n" + "\n".join(base_fds) + "\n\nafter the drain:\n" + "\n".join(fd_list) + "\n")

    # (a) Every accepted alert delivered exactly once, or counted as lost.
    accepted = int(total(m, 'ember_queue_pushed_total{queue="uplink"}'))
    queue_dropped = int(total(m, 'ember_queue_dropped_total{queue="uplink"}'))
    spool_dropped = int(m.get("ember_uplink_dropped", 0))
    lost_total = int(m.get("ember_uplink_lost_total", 0))
    seen, heartbeats = {}, []
    with open(alerts_path) as f:
        for line in f:
            try:
                v = json.loads(line)
            except ValueError:
                continue
            if v.get("device_id") != DEVICE_ID:
                continue
            if v.get("type") == "alert":
                k = (v["epoch"], v["seq"])
                seen[k] = seen.get(k, 0) + 1
            elif v.get("type") == "heartbeat":
                heartbeats.append(v)
    dups = {k: n for k, n in seen.items() if n > 1}
    delivered = len(seen)
    lost = spool_dropped + lost_total + queue_dropped
    if not drain_ok:
        failures.append(f"the uplink did not drain: {m.get('ember_uplink_pending')} pending")
    if dups:
        failures.append(f"{len(dups)} alerts written more than once by the collector: {sorted(dups)[:5]}")
    if delivered + lost != accepted:
        failures.append(f"alerts: {accepted} accepted, {delivered} delivered, {lost} counted lost: "
                        f"{accepted - delivered - lost} unaccounted for")
    seqs = sorted(k[1] for k in seen)
    if seqs and seqs[-1] != accepted:
        failures.append(f"the last alert delivered is seq {seqs[-1]}, but {accepted} were accepted")
    if accepted < max(10, a.duration / 30):
        failures.append(f"only {accepted} alerts in {a.duration:.0f} s: alerts did not flow")
    if lost:
        if not state["disk_full_periods"]:
            failures.append(f"{lost} alerts lost without the disk ever being full")
        if queue_dropped:
            failures.append(f"{queue_dropped} alerts dropped by the uplink's input queue (not the disk)")
        reported = max((h.get("spool_dropped", 0) for h in heartbeats), default=0)
        if reported != spool_dropped + lost_total:
            failures.append(f"heartbeats report {reported} lost, the appliance counts {spool_dropped + lost_total}")
        if not loss_seen_in_health:
            failures.append("alerts were lost but /api/status and /health never showed the loss as trouble")

    # (b) RSS and fds flat.
    flat = [s for s in samples]
    third = max(1, len(flat) // 3)
    med = lambda xs: sorted(xs)[len(xs) // 2]
    rss_first, rss_last = med([s["rss"] for s in flat[:third]]), med([s["rss"] for s in flat[-third:]])
    fd_first, fd_last = med([s["fds_fixed"] for s in flat[:third]]), med([s["fds_fixed"] for s in flat[-third:]])
    rss_allowed = max(RSS_TOLERANCE_BYTES, rss_first * RSS_TOLERANCE_FRACTION)
    if len(flat) < 6:
        failures.append(f"only {len(flat)} samples: run longer (--duration)")
    if rss_last - rss_first > rss_allowed:
        failures.append(f"RSS grew: median {rss_first / 2**20:.1f} MiB in the first third, "
                        f"{rss_last / 2**20:.1f} MiB in the last (allowed +{rss_allowed / 2**20:.1f} MiB)")
    if fd_last - fd_first > FD_TOLERANCE:
        failures.append(f"open fds (less viewers' and links' sockets) grew: median {fd_first} in the first third, "
                        f"{fd_last} in the last (allowed +{FD_TOLERANCE})")
    if end["fds"] - base["fds"] > FD_TOLERANCE:
        failures.append(f"open fds at rest grew: {base['fds']} before the faults, {end['fds']} after (allowed +{FD_TOLERANCE}; "
                        f"both lists in target/soak/fds-at-rest.txt)")

    # (c) Every trouble cleared.
    if not healthy or status != 200:
        failures.append(f"trouble not cleared at the end: /health {status}: {health_body.strip()}")
    for name in ("ember_uplink_spool_trouble", "ember_event_log_trouble"):
        if m.get(name, 0) != 0:
            failures.append(f"{name} = {m.get(name)} at the end")
    faulty = {k: v for k, v in m.items() if k.startswith("ember_sensor_device_faults") and v != 0}
    if faulty:
        failures.append(f"devices still in trouble: {faulty}")
    cond = {k: v for k, v in m.items() if k.startswith("ember_camera_condition") and v != 0}
    if cond:
        failures.append(f"cameras still in trouble: {cond}")
    last_by_source = {}
    try:
        for e in sorted(json.loads(events_body).get("events", []), key=lambda e: e["id"]):
            if e.get("kind") in ("trouble", "restored"):
                last_by_source[e.get("source")] = e["kind"]
    except (ValueError, KeyError):
        failures.append("the event log could not be read")
    stuck = [s for s, k in last_by_source.items() if k == "trouble"]
    if stuck:
        failures.append(f"the event log's last word on {stuck} is trouble, not restored")
    try:
        t = json.loads(status_body).get("trouble")
        if t:
            failures.append(f"/api/status still lists trouble: {t}")
    except ValueError:
        failures.append("/api/status could not be read")

    # Nothing broke on the way: no panic, no frame the live view's encoder refused.
    enc_errors = total(m, "ember_live_encode_errors_total")
    if enc_errors:
        failures.append(f"{enc_errors:.0f} live-view frames the JPEG encoder refused (ember_live_encode_errors_total)")

    # A clean stop.
    procs.p.pop("appliance")
    app.send_signal(signal.SIGTERM)
    try:
        rc = app.wait(timeout=30)
    except subprocess.TimeoutExpired:
        app.kill()
        rc = "hung"
    if rc != 0:
        failures.append(f"the appliance did not stop cleanly: exit {rc}")
    with open(os.path.join(out, "appliance.log"), errors="replace") as f:
        text = f.read()
    warns = len(re.findall(r"^\[\S+ WARN ", text, re.M))
    if "panicked" in text:
        failures.append("the appliance panicked (target/soak/appliance.log)")

    rows = [
        ("seed", seed), ("duration", f"{a.duration:.0f} s (+{warm:.0f} s warm-up)"), ("uplink", transport),
        ("faults injected", ", ".join(f"{f.name} {f.count}x ({f.down_secs:.0f} s down)" for f in faults)),
        ("viewers", viewer_count),
        ("disk full", f"{sum(e - s for s, e in state['disk_full_periods']):.0f} s in {len(state['disk_full_periods'])} periods"
         if disk_fault else "skipped (not root or no tmpfs)"),
        ("alerts accepted", accepted), ("alerts delivered (unique)", delivered), ("duplicates written", len(dups)),
        ("alerts lost (counted)", f"{lost} (spool drop {spool_dropped}, memory {lost_total}, input queue {queue_dropped})"),
        ("uplink reconnects", int(m.get("ember_uplink_reconnects_total", 0))),
        ("camera reconnects", int(total(m, "ember_camera_reconnects_total"))),
        ("device reconnects", int(total(m, "ember_sensor_device_reconnects_total"))),
        ("RSS baseline / end at rest", f"{base['rss'] / 2**20:.1f} / {end['rss'] / 2**20:.1f} MiB"),
        ("RSS median first / last third", f"{rss_first / 2**20:.1f} / {rss_last / 2**20:.1f} MiB (allowed +{rss_allowed / 2**20:.1f})"),
        ("RSS max", f"{max(s['rss'] for s in flat) / 2**20:.1f} MiB" if flat else "-"),
        ("fds baseline / end at rest", f"{base['fds']} / {end['fds']} (allowed +{FD_TOLERANCE})"),
        ("fds less viewers and links, median first / last third", f"{fd_first} / {fd_last} (allowed +{FD_TOLERANCE})"),
        ("fds max", max(s["fds"] for s in flat) if flat else "-"),
        ("troubles seen (samples: uplink each 1 s, others each 5 s)", ", ".join(f"{k} ({v} samples)" for k, v in sorted(troubles_seen.items())) or "none"),
        ("appliance log", f"{warns} WARN lines, {len(text.splitlines())} lines"),
        ("cpu seconds (appliance)", f"{m.get('ember_process_cpu_seconds_total', 0):.1f}"),
        ("samples", len(flat)),
    ]
    print("\n| what | figure |\n| --- | --- |")
    for k, v in rows:
        print(f"| {k} | {v} |")
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({k: str(v) for k, v in rows} | {"failures": failures, "samples": samples}, f, indent=1)


if __name__ == "__main__":
    main()
