//! The sensor protocol decoder (`sensor::proto::Decoder`), fed in arbitrary chunks, with the contracts the
//! old in-tree harness checked: every byte is eventually consumed, pending bytes stay bounded by the input,
//! and after a terminator a valid packet always decodes (resynchronisation).

use ember_edge::sensor::proto::{Decoder, Event, Packet};

#[path = "chunks.rs"]
mod chunks;

fn drain(dec: &mut Decoder, resync: &mut bool) -> usize {
    let mut n = 0;
    while let Some(ev) = dec.pull() {
        n += 1;
        match ev {
            Event::Rejected(r) => assert!(!r.reason().is_empty()),
            Event::Packet(Packet::LocId("resync")) => *resync = true,
            _ => {}
        }
    }
    n
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let (input, mut chunks) = chunks::split(data);
        let mut dec = Decoder::new();
        let mut rest = input;
        let mut stalls = 0;
        let mut resync = false;
        while !rest.is_empty() {
            let n = dec.push(&rest[..chunks.next(rest.len())]);
            rest = &rest[n..];
            let pulled = drain(&mut dec, &mut resync);
            stalls = if n == 0 && pulled == 0 { stalls + 1 } else { 0 };
            assert!(stalls < 2, "decoder neither consumed bytes nor produced events");
            assert!(dec.pending_bytes() <= input.len(), "pending bytes exceed the input");
        }
        let _ = dec.last_line();
        let _ = dec.stats();
        // Resynchronisation: after a terminator, a valid packet decodes whatever came before.
        let mut rest: &[u8] = b"\n#locid:resync!\n";
        resync = false;
        while !rest.is_empty() {
            let n = dec.push(rest);
            rest = &rest[n..];
            drain(&mut dec, &mut resync);
        }
        assert!(resync, "decoder did not resynchronise");
        dec.finish();
        drain(&mut dec, &mut resync);
    });
}
