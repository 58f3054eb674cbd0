//! The uplink wire format (`uplink::wire`): the byte-stream splitter, then COBS, the version byte, the HMAC tag
//! and postcard, in both directions, with and without device keys. A frame that decodes is re-encoded and must
//! decode to the same message (the encoder and decoder agree on every message the decoder accepts).

use ember_edge::uplink::wire::{
    self, Down, FrameSplitter, MAX_FRAME, MAX_MESSAGE, Received, Split, decode_down, decode_up,
};

const KEY: &[u8] = b"fuzz-device-key-0123456789abcdef";

fn check(frame: &[u8]) {
    let mut scratch = [0u8; MAX_MESSAGE];
    if let Ok(d) = decode_down(frame, KEY, &mut scratch) {
        let mut out = [0u8; MAX_FRAME];
        let n = wire::encode(&d, KEY, &mut out).expect("a decoded ack encodes again");
        let mut again = [0u8; MAX_MESSAGE];
        let back: Down = decode_down(&out[..n - 1], KEY, &mut again).expect("re-encoded ack decodes");
        assert_eq!(back, d);
    }
    for (keys, required) in [(true, true), (true, false), (false, false), (false, true)] {
        let mut scratch = [0u8; MAX_MESSAGE];
        let key_of = |_: u32| keys.then(|| KEY.to_vec());
        let Ok(msg) = decode_up(frame, &mut scratch, key_of, required) else { continue };
        let mut out = [0u8; MAX_FRAME];
        let n = match msg {
            Received::V2(up) => wire::encode(&up, KEY, &mut out),
            Received::V1(up) => wire::encode_v1(&up, &mut out),
        };
        let n = n.expect("a decoded message encodes again");
        let mut again = [0u8; MAX_MESSAGE];
        let back = decode_up(&out[..n - 1], &mut again, |_| Some(KEY.to_vec()), false).expect("re-encoded decodes");
        assert_eq!(back, msg);
    }
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        // The whole input as one frame, and the input as a stream the TCP reader splits.
        check(data);
        let mut splitter = FrameSplitter::default();
        splitter.feed(data, |s| match s {
            Split::Frame(f) => {
                assert!(!f.contains(&0));
                check(f);
            }
            Split::Oversize => {}
        });
    });
}
