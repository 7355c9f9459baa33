//! Benchmarks for `spool`: a durable append + ack of a 500-byte report (two fdatasyncs), and
//! opening (replaying) a spool that holds 1000 entries. Run:
//! `cargo bench --bench spool -- --warm-up-time 1 --measurement-time 3`.
use criterion::{criterion_group, criterion_main, Criterion};
use defender_agent::spool::{Entry, Settings, Spool};

fn entry(id: u64) -> Entry {
    Entry {
        id,
        format: defender_agent::report::Format::Json,
        payload: vec![b'r'; 500],
    }
}

fn append_and_ack(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut spool, _) = Spool::open(Settings::new(dir.path())).expect("open");
    let mut id = 0u64;
    c.bench_function("spool append+ack 500 B (fsynced)", |b| {
        b.iter(|| {
            id += 1;
            spool.append(entry(id)).expect("append");
            spool.ack(id).expect("ack");
        })
    });
}

fn open_1000(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let (mut spool, _) = Spool::open(Settings::new(dir.path())).expect("open");
        for id in 1..=1000 {
            spool.append(entry(id)).expect("append");
        }
    }
    c.bench_function("spool open with 1000 entries of 500 B", |b| {
        b.iter(|| {
            let (spool, recovery) = Spool::open(Settings::new(dir.path())).expect("open");
            assert_eq!(recovery.entries, 1000);
            drop(spool);
        })
    });
}

criterion_group!(benches, append_and_ack, open_1000);
criterion_main!(benches);
