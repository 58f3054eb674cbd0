//! The event log's recovery (`events::store::Store`) from arbitrary segment bytes: a read-only open changes no
//! file, a writable open cuts torn tails so a second open finds none and the same records, appending after the
//! recovered ids works, and queries return events in id order within their limit.

use ember_edge::events::store::{Query, Store};
use ember_edge::events::{Event, Kind, record};
use ember_edge::uplink::spool::Fsync;

#[path = "files.rs"]
mod files;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let l = files::layout(data);
        let dir = files::fresh_dir("events");
        for (i, seg) in l.segments.iter().enumerate() {
            let mut seg = seg.to_vec();
            if l.repair {
                files::repair(&mut seg, 8, record::MAX_PAYLOAD);
            }
            std::fs::write(dir.join(format!("{:016}.evl", i + 1)), seg).expect("write segment");
        }
        let before = files::snapshot(&dir);
        let ro = Store::open_read_only(&dir).expect("read-only open");
        assert!(files::snapshot(&dir) == before, "a read-only open changed the files");
        let max_bytes = 64 * 1024;
        let (mut store, opened) = Store::open(&dir, max_bytes, Fsync::Never).expect("open recovers any bytes");
        assert!(store.len() <= ro.len());
        drop(ro);
        for newest in [false, true] {
            let limit = l.ops.first().map_or(10, |&b| usize::from(b));
            let q = Query { since: 0, limit, kind: None, newest };
            let got = store.query(&q);
            assert!(got.len() <= limit);
            assert!(got.windows(2).all(|w| w[0].id < w[1].id), "query out of order");
        }
        let id = store.next_id();
        let ev = Event { id, ms: 1, kind: Kind::Log, detail: "fuzz".into(), ..Event::default() };
        store.append(&ev).expect("append after recovery");
        let len = store.len();
        drop(store);
        let (again, reopened) = Store::open(&dir, max_bytes, Fsync::Never).expect("reopen");
        assert_eq!(reopened.torn_bytes, 0, "torn bytes after a recovery");
        assert_eq!(again.len(), len, "records after reopen (first open: {opened:?})");
        assert_eq!(again.next_id(), id + 1);
        let _ = std::fs::remove_dir_all(&dir);
    });
}
