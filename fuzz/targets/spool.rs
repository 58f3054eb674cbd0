//! The alert spool's recovery (`uplink::spool::Spool::open`) from arbitrary segment and state bytes, then what the
//! outbox does with a recovered spool: resend what is pending, acknowledge, append, and open it again. After one
//! recovery every torn tail is gone, so a second open must find none; pending records must be whole records, and a reopen loses
//! none of them.

use ember_edge::uplink::spool::{Fsync, MAX_RECORD, Spool};

#[path = "files.rs"]
mod files;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let l = files::layout(data);
        let dir = files::fresh_dir("spool");
        if let Some(s) = l.state {
            std::fs::write(dir.join("state"), s).expect("write state");
        }
        for (i, seg) in l.segments.iter().enumerate() {
            let mut seg = seg.to_vec();
            if l.repair {
                files::repair(&mut seg, 4, MAX_RECORD);
            }
            std::fs::write(dir.join(format!("{:016}.seg", i + 1)), seg).expect("write segment");
        }
        let _ = ember_edge::uplink::spool::peek_next_seq(&dir);
        // Small, so the bound (drop oldest) is reached by small inputs.
        let max_bytes = 4096;
        let (mut spool, _) = Spool::open(&dir, max_bytes, Fsync::Never).expect("open recovers any bytes");
        let mut pending = Vec::new();
        spool
            .for_each_pending(|seq, frame| {
                assert!(!frame.is_empty() && frame.len() <= MAX_RECORD);
                pending.push(seq);
                true
            })
            .expect("pending records are readable");
        for &op in l.ops {
            match op & 3 {
                0 if !pending.is_empty() => {
                    let _ = spool.ack(pending[usize::from(op >> 2) % pending.len()]);
                }
                1 => {
                    let n = 1 + usize::from(op >> 2);
                    let _ = spool.append(|seq, buf| {
                        buf[..4].copy_from_slice(&seq.to_le_bytes());
                        Some(n.min(MAX_RECORD))
                    });
                }
                2 => {
                    let _ = spool.ack(u32::from(op >> 2));
                }
                _ => {
                    let _ = spool.flush_state();
                }
            }
        }
        let before = spool.pending();
        drop(spool);
        let (again, rec) = Spool::open(&dir, max_bytes, Fsync::Never).expect("reopen");
        assert_eq!(rec.torn_bytes, 0, "torn bytes after a recovery");
        // Out-of-order acknowledgements live in memory only, so a reopen may resend more, never fewer.
        assert!(again.pending() >= before, "{} pending before the reopen, {} after", before, again.pending());
        let _ = std::fs::remove_dir_all(&dir);
    });
}
