//! In-tree fuzzer for the sensor protocol decoder (cargo-fuzz needs a nightly compiler, which the project's
//! machines do not have). A mutation fuzzer seeded with real device packets: bit flips, byte insertions and
//! deletions, splices and terminator games, fed in random chunk sizes. Besides "no panic" it checks the
//! decoder's contracts after every input: every byte is eventually consumed, pending bytes stay bounded, and
//! a valid packet after a terminator always decodes (resynchronisation).
//!
//! Run: `cargo run --release --example fuzz_decoder -- [SECONDS] [SEED]` (CI runs it for a bounded time).

use ember_edge::prng::XorShift64 as Rng;
use ember_edge::sensor::proto::{Decoder, Event, MAX_LINE, Packet};
use std::time::{Duration, Instant};

fn seeds() -> Vec<Vec<u8>> {
    let frame: String = (0..834).map(|i| format!("{:04X}", (i * 7919) as u16)).collect();
    let eeprom: String = (0..832).map(|i| format!("{:04X}", (i * 31) as u16)).collect();
    let raw: String = (0..768).map(|i| format!("{:04X}", i as u16)).collect();
    let spaced: String = (0..768).map(|i| (i % 4096).to_string()).collect::<Vec<_>>().join(" ");
    [
        "#serialno:SIM325733!\r\n".to_string(),
        "#locid:  default room  !\n".into(),
        format!("#frame1234:{frame}!\r\n"),
        format!("#frame:roomB:{frame}!\n"),
        format!("#frame:{raw}!\n"),
        format!("#frame7:{spaced}!\n"),
        "#Sensor1234:ADC1=269,ADC2=1296,ADC3:=1,DIO=0!\r\n".into(),
        "#Sensor:cam01:ADC1=1.5,MPY30=1!\n".into(),
        format!("#EEPROM1234:{eeprom}!\r\n"),
        "hello world\n".into(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect()
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], out: &mut Vec<u8>) {
    out.clear();
    for _ in 0..1 + rng.below(4) {
        out.extend_from_slice(&seeds[rng.below(seeds.len())]);
    }
    for _ in 0..rng.below(8) {
        let len = out.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(len + 1);
                out.insert(i, rng.next() as u8);
            }
            2 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below(len - i + 1).min(64);
                out.drain(i..i + n);
            }
            3 => {
                let i = rng.below(len + 1);
                out.insert(i, *[b'!', b'\n', b'\r', b':', b',', b'=', b' '].get(rng.below(7)).unwrap_or(&b'!'));
            }
            4 => {
                // An over-long line: the decoder must reject it once and resynchronise.
                let n = MAX_LINE + rng.below(3 * MAX_LINE);
                let i = rng.below(len + 1);
                out.splice(i..i, std::iter::repeat_n(b'A', n));
            }
            5 if len > 0 => {
                let i = rng.below(len);
                out.truncate(i);
            }
            _ => {
                let i = rng.below(len + 1);
                out.splice(i..i, [0xFF, 0x00, 0xC3, 0x28]);
            }
        }
    }
}

fn feed(dec: &mut Decoder, rng: &mut Rng, input: &[u8]) -> u64 {
    let mut events = 0;
    let mut rest = input;
    let mut stalls = 0;
    while !rest.is_empty() {
        let chunk = 1 + rng.below(rest.len().min(5000));
        let n = dec.push(&rest[..chunk]);
        rest = &rest[n..];
        let mut pulled = 0;
        while let Some(ev) = dec.pull() {
            pulled += 1;
            if let Event::Rejected(r) = ev {
                assert!(!r.reason().is_empty());
            }
        }
        events += pulled;
        stalls = if n == 0 && pulled == 0 { stalls + 1 } else { 0 };
        assert!(stalls < 2, "decoder neither consumed bytes nor produced events");
        assert!(dec.pending_bytes() <= input.len(), "pending bytes exceed input");
    }
    events
}

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(30.0);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0x5EED_1234_ABCD) | 1;
    let mut rng = Rng::new(seed);
    let seeds = seeds();
    let mut input = Vec::with_capacity(64 * 1024);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let (mut iters, mut events) = (0u64, 0u64);
    let mut dec = Decoder::new();
    while Instant::now() < deadline {
        for _ in 0..64 {
            mutate(&mut rng, &seeds, &mut input);
            events += feed(&mut dec, &mut rng, &input);
            // Resynchronisation: after a terminator, a valid packet must decode whatever came before.
            let _ = feed(&mut dec, &mut rng, b"\n");
            let mut got = false;
            let mut rest: &[u8] = b"#locid:resync!\n";
            while !rest.is_empty() {
                let n = dec.push(rest);
                rest = &rest[n..];
                while let Some(ev) = dec.pull() {
                    if let Event::Packet(Packet::LocId("resync")) = ev {
                        got = true;
                    }
                }
            }
            assert!(
                got,
                "decoder did not resynchronise after input {:?}",
                String::from_utf8_lossy(&input[..input.len().min(200)])
            );
            iters += 1;
        }
    }
    println!("fuzz_decoder: {iters} inputs, {events} events in {secs} s (seed {seed}): no panic, all invariants held");
}
