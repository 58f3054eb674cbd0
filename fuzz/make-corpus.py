#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/ from the repo's own fixtures and small synthetic inputs.

Run from the repo root: python3 fuzz/make-corpus.py (needs libjpeg-turbo's `cjpeg` for the JPEG seeds:
Debian libjpeg-turbo-progs). The
seeds are committed; this script says where each came from and makes them again.
"""
import hashlib, hmac, json, os, struct, subprocess, tempfile, zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# sensor: the first packets of the real device session (tests/fixtures/thermal), one seed per packet kind,
# behind a chunk-size byte (see targets/chunks.rs).
session = os.path.join(ROOT, "tests/fixtures/thermal/mlx90640_tcp_session.jsonl")
stream = b""
with open(session) as f:
    for line in f:
        o = json.loads(line)
        if o["dir"] == "from_device":
            stream += o["data"].encode()
        if len(stream) > 8000:
            break
packets = [p + b"!" for p in stream.split(b"!") if p.strip()]
frame = next(p for p in packets if p.startswith(b"#frame"))
sensor = next(p for p in packets if b"#Sensor" in p)
put("sensor", "frame", b"\x00" + frame + b"\r\n")
put("sensor", "sensor-chunked", b"\x35" + sensor + b"\r\n" + sensor)
put("sensor", "misc", b"\x07#serialno:SIM325733!\r\n#locid:  default room  !\n#Sensor:cam01:ADC1=1.5,MPY30=1!\nhello\n")
put("sensor", "eeprom-short", b"\x00#EEPROM1234:" + b"0010" * 40 + b"!\r\n")

# jpeg: small synthetic frames in the layouts cameras send (4:2:0, 4:2:2, 4:4:4, grey, restart markers,
# progressive), one without its Huffman tables (the MJPEG convention the DHT repair handles).
def jpeg(args):
    # A 48x32 gradient with a bright blob, through libjpeg-turbo's cjpeg.
    w, h = 48, 32
    px = bytearray()
    for y in range(h):
        for x in range(w):
            hot = (x - 30) ** 2 + (y - 12) ** 2 < 60
            px += bytes([255, 200 if hot else 4 * y, 40 if hot else 5 * x])
    ppm = b"P6 %d %d 255\n" % (w, h) + bytes(px)
    return subprocess.run(["cjpeg", "-quality", "60"] + args, input=ppm, capture_output=True, check=True).stdout


def strip_dht(j):
    out, i = bytearray(j[:2]), 2
    while i + 4 <= len(j) and j[i] == 0xFF and j[i + 1] != 0xDA:
        n = 2 + struct.unpack(">H", j[i + 2 : i + 4])[0]
        if j[i + 1] != 0xC4:
            out += j[i : i + n]
        i += n
    return bytes(out + j[i:])


jpegs = {
    "420": jpeg(["-sample", "2x2"]),
    "422": jpeg(["-sample", "2x1"]),
    "444": jpeg(["-sample", "1x1"]),
    "grey": jpeg(["-grayscale"]),
    "restart": jpeg(["-restart", "1"]),
    "progressive": jpeg(["-progressive"]),
}
for name, j in jpegs.items():
    put("jpeg", name, j)
put("jpeg", "420-no-dht", strip_dht(jpegs["420"]))

# multipart: a Content-Type line, then a chunk-size byte, then an MJPEG stream as cameras send it.
small = strip_dht(jpegs["420"])
part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(small) + small + b"\r\n"
put("multipart", "declared", b"multipart/x-mixed-replace; boundary=frame\n\x00" + part + part)
put("multipart", "chunked", b"multipart/x-mixed-replace;boundary=\"--frame\"\n\x21" + part.replace(b"Content-Length", b"X-Len"))
put("multipart", "other-part", b"multipart/x-mixed-replace; boundary=frame\n\x00--frame\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello\r\n" + part)
put("multipart", "no-boundary", b"\n\x09garbage\xff\xd8" + small[2:] + b"--x\r\n\r\n" + small)

# http_head: heads the status page, the API and a browser send.
put("http_head", "get", b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:9090\r\nUser-Agent: curl/8\r\nAccept: */*")
put("http_head", "post", b"POST /api/zones/boiler%2Droom/silence?x=1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer t\r\nOrigin: http://a\r\nContent-Length: 0")
put("http_head", "encoded", b"GET /api/cameras/cam%2F1%25x/snapshot.jpg?full HTTP/1.1\r\nhost: a\r\nCookie: s=1\r\nHOST: b")

# uplink: real v2 frames (COBS, version, postcard, HMAC tag) with the fuzz key, an ack, a v1 alert, a stream.
KEY = b"fuzz-device-key-0123456789abcdef"


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def zz(n):
    return varint((n << 1) ^ (n >> 15))


def cobs(data):
    out, block = bytearray(), bytearray()
    for b in data:
        if b == 0:
            out += bytes([len(block) + 1]) + block
            block = bytearray()
        else:
            block.append(b)
            if len(block) == 254:
                out += b"\xff" + block
                block = bytearray()
    out += bytes([len(block) + 1]) + block
    return bytes(out) + b"\x00"


def v2(body):
    raw = b"\x02" + body
    return cobs(raw + hmac.new(KEY, raw, hashlib.sha256).digest()[:16])


alert = varint(0) + varint(42) + varint(1795000000) + varint(1234) + varint(1795000000000) + varint(4) + b"hall"
alert += bytes([1, 3, 5]) + varint(870) + zz(512) + zz(30) + varint(65535) + bytes([2])
heartbeat = varint(1) + varint(42) + varint(1795000000) + varint(1795000000000) + varint(4) + varint(3) + varint(0)
put("uplink", "alert", v2(alert))
put("uplink", "heartbeat", v2(heartbeat))
put("uplink", "ack", v2(varint(0) + varint(1234)))
v1 = varint(0) + varint(42) + varint(77) + varint(1795000000000) + varint(4) + b"hall" + bytes([1, 3, 5]) + varint(870) + zz(512) + varint(10)
put("uplink", "v1-alert", cobs(b"\x01" + v1))
put("uplink", "stream", v2(heartbeat) + v2(alert) + b"\x00\x00" + v2(varint(0) + varint(7)))

# spool: segments of whole records [len u16][crc32(seq, frame) u32][seq u32][frame] behind the layout of
# targets/files.rs, a valid state file, a torn tail; the last bytes are operations.
def spool_rec(seq, frame):
    s = struct.pack("<I", seq)
    return struct.pack("<HI", len(frame), zlib.crc32(s + frame)) + s + frame


def seg(b):
    return struct.pack("<H", len(b)) + b


state = struct.pack("<II", 1795000000, 2)
state += struct.pack("<I", zlib.crc32(state))
s1 = b"".join(spool_rec(i, v2(alert)) for i in range(1, 5))
s2 = spool_rec(5, v2(alert)) + spool_rec(6, v2(heartbeat))[:20]
put("spool", "two-segments", bytes([0b0110]) + state + seg(s1) + seg(s2) + bytes([0, 1, 4, 9, 3]))
put("spool", "repair", bytes([0b0001]) + seg(spool_rec(1, b"x" * 40)[:6] + b"\0" * 4 + b"y" * 40) + bytes([1, 5, 0]))
put("spool", "no-state", bytes([0]) + seg(s1 + b"\xff" * 7) + bytes([2, 6, 0, 0]))

# event_log: segments of records [len u16][crc32(id, json) u32][id u64][event JSON].
def ev_rec(i, kind, extra=""):
    p = json.dumps({"id": i, "ms": 1700000000000 + i, "kind": kind, **({"zone": "hall"} if kind == "zone" else {}), "detail": "normal → alarm" + extra}, ensure_ascii=False).encode()
    idb = struct.pack("<Q", i)
    return struct.pack("<HI", len(p), zlib.crc32(idb + p)) + idb + p


e1 = b"".join(ev_rec(i, k) for i, k in [(1, "start"), (2, "zone"), (3, "operator"), (4, "zone")])
e2 = ev_rec(5, "trouble") + ev_rec(6, "stop")[:17]
put("event_log", "two-segments", bytes([0b0100]) + seg(e1) + seg(e2) + bytes([3]))
put("event_log", "repair", bytes([0b0001]) + seg(ev_rec(9, "config")[:2] + b"\0\0\0\0" + ev_rec(9, "config")[6:]) + bytes([0]))

# config: the shipped configs.
for name in ["default.toml", "dev.toml", "bench-sensors.toml"]:
    with open(os.path.join(ROOT, "configs", name), "rb") as f:
        put("config", name.removesuffix(".toml"), f.read())
put("config", "broken", b"[site]\nname = 3\nbogus = true\n[[cameras]]\nname = \"a\"\nsource = \"nope\"\n")
