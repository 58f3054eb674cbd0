//! Tests for the sensor-protocol decoder (a child module so `proto.rs` stays readable).

use super::*;
use crate::sensor::thermal_compat::compat_frame;

fn allocs() -> usize {
    crate::alloc_count::allocations()
}

/// Owned copy of an event, so tests can collect and compare them.
#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Serial(String),
    Loc(String),
    Frame(Option<String>, Vec<u16>),
    Raw(Option<String>, Vec<u16>, bool),
    Sensor(Option<String>, Vec<(String, SensorValue)>),
    Eeprom(Option<String>, Vec<u16>),
    Rej(Reject),
}

fn own(ev: Event<'_>) -> Ev {
    let o = |l: Option<&str>| l.map(str::to_owned);
    match ev {
        Event::Rejected(r) => Ev::Rej(r),
        Event::Packet(p) => match p {
            Packet::SerialNo(s) => Ev::Serial(s.into()),
            Packet::LocId(s) => Ev::Loc(s.into()),
            Packet::Frame { loc, words } => Ev::Frame(o(loc), words.to_vec()),
            Packet::RawCounts { loc, counts, spaced } => Ev::Raw(o(loc), counts.to_vec(), spaced),
            Packet::Sensor { loc, fields } => {
                Ev::Sensor(o(loc), fields.iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }
            Packet::Eeprom { loc, words } => Ev::Eeprom(o(loc), words.to_vec()),
        },
    }
}

/// The canonical IO loop: push, drain, repeat.
fn feed(dec: &mut Decoder, mut rest: &[u8], out: &mut Vec<Ev>) {
    while !rest.is_empty() {
        let n = dec.push(rest);
        rest = &rest[n..];
        while let Some(ev) = dec.pull() {
            out.push(own(ev));
        }
    }
}

fn decode(bytes: &[u8]) -> Vec<Ev> {
    let mut dec = Decoder::new();
    let mut out = Vec::new();
    feed(&mut dec, bytes, &mut out);
    dec.finish();
    while let Some(ev) = dec.pull() {
        out.push(own(ev));
    }
    out
}

fn words(n: usize, seed: u16) -> Vec<u16> {
    (0..n as u16).map(|i| i.wrapping_mul(40503).wrapping_add(seed)).collect()
}
fn hex(w: &[u16]) -> String {
    w.iter().map(|w| format!("{w:04X}")).collect()
}
fn frame_line(prefix: &str) -> (Vec<u16>, String) {
    let w = words(FRAME_WORDS, 7);
    let line = format!("{prefix}{}!\r\n", hex(&w));
    (w, line)
}

#[test]
fn every_reject_reason() {
    let sp = |n: usize, v: &str| vec![v; n].join(" ");
    let mut bad_hex = hex(&words(FRAME_WORDS, 1));
    bad_hex.replace_range(100..101, "G");
    let mut bad_ee = hex(&words(EEPROM_WORDS, 1));
    bad_ee.replace_range(0..1, "z");
    let cases: Vec<(Vec<u8>, Reject, &str)> = vec![
        ([b"#frame1:".as_slice(), &[b'A'; 5000]].concat(), Reject::Oversize, "oversize"),
        (b"#serialno:\xff\xfe".to_vec(), Reject::NotUtf8OrAscii, "not_utf8"),
        (b"#Sensor1:ADC1=1,\xc3=2".to_vec(), Reject::NotUtf8OrAscii, "not_utf8"),
        (b"hello world".to_vec(), Reject::UnknownPacket, "unknown_packet"),
        (b"#FRAME1:00".to_vec(), Reject::UnknownPacket, "unknown_packet"),
        (b"x#serialno:A".to_vec(), Reject::UnknownPacket, "unknown_packet"),
        (b"#frame1234".to_vec(), Reject::FrameNoColon, "frame_no_colon"),
        (format!("#frame1:{}", "A".repeat(3335)).into(), Reject::FrameLength(3335), "frame_length"),
        (b"#frame1234:".to_vec(), Reject::FrameLength(0), "frame_length"),
        (b"#frame1:1 2 3".to_vec(), Reject::FrameCount(3), "frame_count"),
        (format!("#frame1:{bad_hex}").into(), Reject::FrameBadHex, "frame_bad_hex"),
        (format!("#frame1:{} 70000", sp(767, "1")).into(), Reject::FrameBadValue, "frame_bad_value"),
        (format!("#frame1:{} -1", sp(767, "1")).into(), Reject::FrameBadValue, "frame_bad_value"),
        (b"#Sensor1234".to_vec(), Reject::SensorNoColon, "sensor_no_colon"),
        (b"#Sensor1:ADC1=abc".to_vec(), Reject::SensorBadValue, "sensor_bad_value"),
        (b"#Sensor1:ADC1=,ADC2=3".to_vec(), Reject::SensorBadValue, "sensor_bad_value"),
        (b"#Sensor1:T=1.2.3".to_vec(), Reject::SensorBadValue, "sensor_bad_value"),
        (b"#Sensor1:N=1e5".to_vec(), Reject::SensorBadValue, "sensor_bad_value"),
        (b"#EEPROM1234".to_vec(), Reject::EepromNoColon, "eeprom_no_colon"),
        (b"#EEPROM1234:ABC".to_vec(), Reject::EepromLength(3), "eeprom_length"),
        (format!("#EEPROM1:{bad_ee}").into(), Reject::EepromBadHex, "eeprom_bad_hex"),
    ];
    for (mut line, want, label) in cases {
        line.extend_from_slice(b"!\r\n");
        let got = decode(&line);
        assert_eq!(got, vec![Ev::Rej(want)], "{}", String::from_utf8_lossy(&line[..40.min(line.len())]));
        assert_eq!(want.reason(), label);
        assert!(!want.to_string().is_empty());
    }
    assert_eq!(Reject::FrameLength(3327).to_string(), "frame length 3327");
    assert_eq!(Reject::FrameNoColon.to_string(), "frame no colon");
}

#[test]
fn loc_id_forms() {
    let (w, _) = frame_line("");
    let h = hex(&w);
    let loc = |s: &str| Some(s.to_owned());
    for (line, want) in [
        (format!("#frame1234:{h}"), loc("1234")),
        (format!("#frame:roomB:{h}"), loc("roomB")),
        (format!("#frame: roomB :{h}"), loc("roomB")),
        (format!("#frame:{h}"), None),
        (format!("#frame::{h}"), None),
        (format!("#frame:{}", h.to_lowercase()), None),
    ] {
        assert_eq!(decode(line.as_bytes()), vec![Ev::Frame(want, w.clone())], "{}", &line[..20]);
    }
    let f = |k: &str, v: SensorValue| (k.to_owned(), v);
    let (i, fl) = (SensorValue::Int, SensorValue::Float);
    let real = vec![f("ADC1", i(269)), f("ADC2", i(1296)), f("ADC3", i(1)), f("DIO", i(0))];
    assert_eq!(decode(b"#Sensor1234:ADC1=269,ADC2=1296,ADC3:=1,DIO=0!\r\n"), vec![Ev::Sensor(loc("1234"), real)]);
    assert_eq!(
        decode(b"#Sensor:cam01: ADC1 = 5 ,junk,T=21.5,MPY30=1"),
        vec![Ev::Sensor(loc("cam01"), vec![f("ADC1", i(5)), f("T", fl(21.5)), f("MPY30", i(1))])]
    );
    assert_eq!(decode(b"#Sensor:ADC1=5"), vec![Ev::Sensor(None, vec![f("ADC1", i(5))])]);
    // EmberEye quirk (doc §1.3): without an embedded id, `ADC3:` is taken as the loc separator.
    assert_eq!(
        decode(b"#Sensor:ADC1=269,ADC2=1296,ADC3:=1,DIO=0!"),
        vec![Ev::Sensor(loc("ADC1=269,ADC2=1296,ADC3"), vec![f("", i(1)), f("DIO", i(0))])]
    );
    let e = words(EEPROM_WORDS, 3);
    assert_eq!(decode(format!("#EEPROM1234:{}", hex(&e)).as_bytes()), vec![Ev::Eeprom(loc("1234"), e.clone())]);
    assert_eq!(decode(format!("#EEPROM:{}", hex(&e)).as_bytes()), vec![Ev::Eeprom(None, e)]);
    assert_eq!(decode(b"#serialno:SIM325733!"), vec![Ev::Serial("SIM325733".into())]);
    assert_eq!(decode(b"#locid:  default room  !"), vec![Ev::Loc("default room".into())]);
}

#[test]
fn sensor_accessors_and_duplicates() {
    let mut dec = Decoder::new();
    dec.push(b"#Sensor7:ADC1=1,ADC2=2.5,ADC1=9,DIO=0,x\n");
    let Some(Event::Packet(Packet::Sensor { loc, fields })) = dec.pull() else { panic!("no sensor") };
    assert_eq!(loc, Some("7"));
    assert_eq!(fields.len(), 4);
    assert_eq!(fields.adc1(), Some(SensorValue::Int(9))); // last one wins, like a Python dict
    assert_eq!(fields.adc2().map(SensorValue::as_f64), Some(2.5));
    assert_eq!((fields.dio(), fields.adc3(), fields.mpy30()), (Some(SensorValue::Int(0)), None, None));
}

#[test]
fn raw_count_frames() {
    let w = words(PIXELS, 5);
    assert_eq!(decode(format!("#frame9:{}", hex(&w)).as_bytes()), vec![Ev::Raw(Some("9".into()), w.clone(), false)]);
    // simulators/tcp_simulator.py style: 768 values 0..4095 as `{:04x}`, any ASCII whitespace between them. EmberEye
    // reads each token with int(tok, 16), so `0100` is 256, not 100.
    let w: Vec<u16> = w.iter().map(|v| v % 4096).collect();
    let spaced: Vec<String> = w.iter().map(|v| format!("{v:04x}")).collect();
    let line = format!("#frame:{}\n", spaced.join(" ").replacen(" ", "\t \t", 1));
    assert_eq!(decode(line.as_bytes()), vec![Ev::Raw(None, w.clone(), true)]);
    let mut tokens: Vec<String> = w.iter().map(|v| format!("{v:X}")).collect();
    tokens[0] = "0100".into();
    tokens[1] = "0xff".into();
    tokens[2] = "F_FF".into();
    tokens[3] = "ffff".into();
    let mut want = w.clone();
    want[..4].copy_from_slice(&[256, 255, 0xFFF, 0xFFFF]);
    assert_eq!(decode(format!("#frame:{}\n", tokens.join(" ")).as_bytes()), vec![Ev::Raw(None, want, true)]);
    for bad in ["10000", "-1", "+1", "0x", "_1", "1_", "1__2", "g", "1.5"] {
        let mut t = tokens.clone();
        t[5] = bad.into();
        let got = decode(format!("#frame:{}\n", t.join(" ")).as_bytes());
        assert_eq!(got, vec![Ev::Rej(Reject::FrameBadValue)], "{bad}");
    }
    // Known limit: 768 five-digit values need > MAX_LINE bytes (≈4.6 KB), so they are Oversize.
    assert_eq!(
        decode(format!("#frame:{}\n", vec!["65535"; PIXELS].join(" ")).as_bytes()),
        vec![Ev::Rej(Reject::Oversize)]
    );
}

#[test]
fn terminators() {
    for t in ["\n", "\r\n", "!", "!\r\n", "!!\n"] {
        assert_eq!(decode(format!("#serialno:A{t}").as_bytes()), vec![Ev::Serial("A".into())], "{t:?}");
    }
    let got = decode(b"#serialno:A\n#serialno:B\r\n#serialno:C!#serialno:D!\r\n\r\n  \n#locid:E");
    let want: Vec<Ev> =
        ["A", "B", "C", "D"].iter().map(|s| Ev::Serial((*s).into())).chain([Ev::Loc("E".into())]).collect();
    assert_eq!(got, want);
    // Improvement over EmberEye: two packets on one `\n` line are two packets.
    assert_eq!(decode(b"#serialno:X1!#locid:Y1!\n"), vec![Ev::Serial("X1".into()), Ev::Loc("Y1".into())]);
}

#[test]
fn push_stops_at_terminator_and_waits_for_pull() {
    let mut dec = Decoder::new();
    let input = b"#serialno:A\n#serialno:B\n";
    assert_eq!(dec.push(input), 12);
    assert_eq!(dec.push(&input[12..]), 0, "must pull first");
    assert!(matches!(dec.pull(), Some(Event::Packet(Packet::SerialNo("A")))));
    assert!(dec.pull().is_none());
    assert_eq!(dec.push(&input[12..]), 12);
    assert!(matches!(dec.pull(), Some(Event::Packet(Packet::SerialNo("B")))));
    assert_eq!(dec.push(b"garbage\n"), 8);
    assert!(matches!(dec.pull(), Some(Event::Rejected(Reject::UnknownPacket))));
    assert!(dec.pull().is_none());
    assert_eq!(dec.last_line(), b"garbage");
    let s = dec.stats();
    assert_eq!((s.bytes, s.packets, s.rejected), (32, 2, 1));
}

#[test]
fn frame_split_byte_by_byte() {
    let (w, line) = frame_line("#frame1234:");
    let mut dec = Decoder::new();
    let mut out = Vec::new();
    for b in line.as_bytes() {
        assert_eq!(dec.push(std::slice::from_ref(b)), 1);
        while let Some(ev) = dec.pull() {
            out.push(own(ev));
        }
    }
    assert_eq!(out, vec![Ev::Frame(Some("1234".into()), w)]);
    assert_eq!(dec.stats().empty_lines, 1, "the \\r\\n after ! is an empty line");
}

#[test]
fn oversize_line_is_rejected_once_and_connection_continues() {
    let mut dec = Decoder::new();
    let mut out = Vec::new();
    for _ in 0..70 {
        feed(&mut dec, &[b'A'; 1000], &mut out);
    }
    assert_eq!(out, vec![Ev::Rej(Reject::Oversize)]);
    assert_eq!(dec.discarding_bytes(), 70_000, "IO layer would close here (> 64 KiB)");
    feed(&mut dec, b"AAAA\n#serialno:ok\n", &mut out);
    assert_eq!(dec.discarding_bytes(), 0);
    assert_eq!(out, vec![Ev::Rej(Reject::Oversize), Ev::Serial("ok".into())]);
    // Exactly MAX_LINE bytes fit; one more does not.
    let fit = format!("#locid:{}", "x".repeat(MAX_LINE - 7));
    assert_eq!(decode(fit.as_bytes()), vec![Ev::Loc("x".repeat(MAX_LINE - 7))]);
    assert_eq!(decode(format!("{fit}y\n").as_bytes()), vec![Ev::Rej(Reject::Oversize)]);
}

#[test]
fn finish_parses_unterminated_last_line() {
    let mut dec = Decoder::new();
    dec.push(b"#serialno:NO_NEWLINE_AT_EOF");
    assert!(dec.pull().is_none());
    dec.finish();
    assert!(matches!(dec.pull(), Some(Event::Packet(Packet::SerialNo("NO_NEWLINE_AT_EOF")))));
}

#[test]
fn real_device_fixture() {
    let text = crate::fixtures::read_to_string(crate::fixtures::THERMAL_SESSION);
    let chunks: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("jsonl record"))
        .filter(|r| r["dir"] == "from_device")
        .map(|r| r["data"].as_str().expect("data string").to_owned())
        .collect();
    assert_eq!(chunks.len(), 839);

    let mut dec = Decoder::new();
    let (mut frames, mut sensors, mut eeproms, mut other) = (0, 0, 0, 0);
    let mut rejects = Vec::with_capacity(16); // pre-sized: the loop below must not allocate
    let mut first = [0f32; PIXELS];
    let mut first_head = [0u16; 4];
    let mut eeprom_head = [0u16; 13];
    let before = allocs();
    for chunk in &chunks {
        let mut rest = chunk.as_bytes(); // pushed exactly as recorded, chunk by chunk
        while !rest.is_empty() {
            let n = dec.push(rest);
            rest = &rest[n..];
            while let Some(ev) = dec.pull() {
                match ev {
                    Event::Packet(Packet::Frame { loc: Some("1234"), words }) => {
                        if frames == 0 {
                            compat_frame(words, 0.0, &mut first);
                            first_head.copy_from_slice(&words[..4]);
                        }
                        frames += 1;
                    }
                    Event::Packet(Packet::Sensor { loc: Some("1234"), fields }) => {
                        let adc = |v: Option<SensorValue>| v.map_or(-1.0, SensorValue::as_f64);
                        assert!((266.0..=297.0).contains(&adc(fields.adc1())));
                        assert!((1296.0..=1326.0).contains(&adc(fields.adc2())));
                        assert!((0.0..=17.0).contains(&adc(fields.adc3())), "ADC3:= key");
                        assert_eq!(fields.len(), 4);
                        sensors += 1;
                    }
                    Event::Packet(Packet::Eeprom { loc: Some("1234"), words }) => {
                        eeprom_head.copy_from_slice(&words[..13]);
                        eeproms += 1;
                    }
                    Event::Rejected(r) if rejects.len() < rejects.capacity() => rejects.push(r),
                    _ => other += 1,
                }
            }
        }
    }
    assert_eq!(allocs() - before, 0, "push/pull allocated");
    assert_eq!((frames, sensors, eeproms, other), (188, 192, 15, 0));
    // The 4 link-corrupted frames contain non-hex bytes and have 3327/3328 payload characters.
    use Reject::FrameLength as L;
    assert_eq!(rejects, [L(3327), L(3328), L(3328), L(3327)]);
    assert_eq!(dec.discarding_bytes(), 0);

    // Doc §2.3 Example A.
    assert_eq!(first_head, [0xFFB0, 0xFFAA, 0xFFAF, 0xFFA1]);
    assert_eq!(first[..4], [26.20, 26.14, 26.19, 26.05]);
    let min = first.iter().copied().fold(f32::INFINITY, f32::min);
    let max = first.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mean = first.iter().map(|&t| f64::from(t)).sum::<f64>() / PIXELS as f64;
    assert!((min - 25.51).abs() < 1e-3 && (max - 26.36).abs() < 1e-3, "{min} {max}");
    assert!((mean - 25.8484).abs() < 1e-3, "{mean}");
    // EEPROM1 word 0 = 00B0 (EmberEye offset +1.76), word 12 = 1901 (MLX90640 control image).
    assert_eq!((eeprom_head[0], eeprom_head[12]), (0x00B0, 0x1901));
}

/// xorshift64*: deterministic, dependency-free randomness for the fuzz test.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Drives one input through a decoder in random chunk sizes, touching every borrowed view.
fn churn(rng: &mut Rng, input: &[u8]) {
    let mut dec = Decoder::new();
    let mut rest = input;
    let mut temps = [0f32; PIXELS];
    let mut drain = |dec: &mut Decoder| {
        while let Some(ev) = dec.pull() {
            match ev {
                Event::Packet(Packet::Sensor { fields, .. }) => {
                    assert_eq!(fields.iter().count(), fields.len());
                    let _ = (fields.adc1(), fields.get(""));
                }
                Event::Packet(Packet::Frame { words, .. }) => compat_frame(words, 1.5, &mut temps),
                Event::Rejected(r) => assert!(!r.reason().is_empty()),
                _ => {}
            }
        }
    };
    while !rest.is_empty() {
        let take = 1 + rng.below(2000).min(rest.len() - 1);
        let n = dec.push(&rest[..take]);
        rest = &rest[n..];
        drain(&mut dec);
    }
    dec.finish();
    drain(&mut dec);
    assert!(dec.pull().is_none());
    assert_eq!(dec.discarding_bytes(), 0);
}

#[test]
fn fuzz_random_and_mutated_input_never_panics() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let alphabet = b"#frameSensorEEPROMserialnolocid::==,,!!\r\n\n  \t0123456789ABCDEFabcdef.-+xyz\xff\xc3";
    for round in 0..3000 {
        let len = if round % 10 == 0 { rng.below(12_000) } else { rng.below(400) };
        let input: Vec<u8> = (0..len)
            .map(|_| if rng.below(8) == 0 { rng.next() as u8 } else { alphabet[rng.below(alphabet.len())] })
            .collect();
        churn(&mut rng, &input);
    }
    let spaced: Vec<String> = words(PIXELS, 2).iter().map(|v| format!("{v:04x}")).collect();
    let templates: Vec<Vec<u8>> = vec![
        frame_line("#frame1234:").1.into(),
        format!("#frame:roomB:{}\n", hex(&words(PIXELS, 1))).into(),
        format!("#frame:{}\n", spaced.join(" ")).into(),
        b"#Sensor1234:ADC1=269,ADC2=1296,ADC3:=1,DIO=0!\r\n".to_vec(),
        format!("#EEPROM1234:{}!\r\n", hex(&words(EEPROM_WORDS, 9))).into(),
        b"#serialno:SIM1!#locid:room!\r\n".to_vec(),
    ];
    for _ in 0..1500 {
        let mut m = templates[rng.below(templates.len())].clone();
        for _ in 0..1 + rng.below(8) {
            let at = rng.below(m.len() + 1);
            match rng.below(6) {
                0 if at < m.len() => m[at] ^= 1 << rng.below(8),
                1 if at < m.len() => drop(m.remove(at)),
                2 => m.insert(at, b"!\n:= \r,"[rng.below(7)]),
                3 => m.insert(at, rng.next() as u8),
                4 => m.truncate(at),
                _ => {
                    let dup = m[at..].to_vec();
                    m.extend_from_slice(&dup);
                }
            }
        }
        churn(&mut rng, &m);
    }
}
