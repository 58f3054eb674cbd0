use super::*;

fn names() -> Names {
    Names { zones: vec!["hall".into()], cameras: vec!["door".into()], devices: vec!["t1".into()] }
}

fn all(log: &EventLog) -> Vec<Event> {
    log.query(&Query { since: 0, limit: usize::MAX, kind: None, newest: false }).events
}

fn kinds(v: &[Event]) -> Vec<Kind> {
    v.iter().map(|e| e.kind).collect()
}

#[test]
fn a_run_without_a_clean_stop_is_logged_as_unclean_at_the_next_start() {
    let d = std::env::temp_dir().join(format!("ember-evlog-unclean-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let open =
        || EventLog::start(d.clone(), 1 << 20, Fsync::Never, names(), &Registry::new(), None, "config x sha256 ab");
    let log = open();
    log.record(Event::now(Kind::Zone, "normal → alarm"));
    assert!(log.flush(Duration::from_secs(5)));
    assert_eq!(kinds(&all(&log)), [Kind::Start, Kind::Config, Kind::Zone]);
    drop(log);
    // No stop recorded: as after a SIGKILL.
    let log = open();
    assert!(log.flush(Duration::from_secs(5)));
    let ev = all(&log);
    assert_eq!(kinds(&ev[3..]), [Kind::UncleanRestart, Kind::Start, Kind::Config]);
    assert_eq!(ev.iter().map(|e| e.id).collect::<Vec<_>>(), (1..=6).collect::<Vec<_>>());
    log.record(Event::now(Kind::Stop, "stopped"));
    assert!(log.flush(Duration::from_secs(5)));
    drop(log);
    let log = open();
    assert!(log.flush(Duration::from_secs(5)));
    assert_eq!(kinds(&all(&log)[7..]), [Kind::Start, Kind::Config]);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_refusing_disk_raises_trouble_holds_the_newest_in_memory_and_writes_them_later() {
    let base = std::env::temp_dir().join(format!("ember-evlog-ro-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    // A file where the folder should be: no write can succeed (root ignores permission bits).
    let d = base.join("events");
    std::fs::write(&d, b"not a folder").unwrap();
    let reg = Registry::new();
    let health = crate::telemetry::Health::new();
    let part = health.register("event log", None);
    let log = EventLog::start(d.clone(), 1 << 20, Fsync::Never, names(), &reg, Some(part), "c");
    for i in 0..MEMORY_CAP + 10 {
        log.record(Event::now(Kind::Output, format!("change {i}")));
        // The writer's queue is smaller than this burst; this test is about the memory hold, not the queue.
        if i % 100 == 99 {
            assert!(log.flush(Duration::from_secs(5)));
        }
    }
    assert!(log.flush(Duration::from_secs(5)));
    assert!(log.in_trouble());
    let page = all(&log);
    assert_eq!(page.len(), MEMORY_CAP);
    assert_eq!(page.last().map(|e| e.detail.as_str()), Some(format!("change {}", MEMORY_CAP + 9).as_str()));
    let p = log.query(&Query { since: 0, limit: 10, kind: None, newest: false });
    assert_eq!((p.lost, p.trouble), (12, true), "the 2 first events and 10 of the changes");
    assert!(reg.render().contains("ember_event_log_trouble 1"));
    assert!(matches!(&health.states()[0].1, crate::telemetry::PartState::Trouble(_)), "{:?}", health.states());
    // The disk comes back: the held events are written, in order, and trouble clears.
    std::fs::remove_file(&d).unwrap();
    log.record(Event::now(Kind::Zone, "after"));
    assert!(log.flush(Duration::from_secs(5)));
    assert!(!log.in_trouble());
    assert_eq!(health.states()[0].1, crate::telemetry::PartState::Running);
    let view = Store::open_read_only(&d).unwrap();
    let back = view.query(&Query { since: 0, limit: usize::MAX, kind: None, newest: false });
    assert_eq!(back.len(), MEMORY_CAP + 2);
    assert!(back.windows(2).all(|w| w[0].id < w[1].id));
    // The note takes its id when the writer notices, after the event that found the disk back.
    assert_eq!(back[MEMORY_CAP].detail, "after");
    assert_eq!(back[MEMORY_CAP + 1].kind, Kind::Log, "the log notes that the disk came back");
    let _ = std::fs::remove_dir_all(&base);
}
