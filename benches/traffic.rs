//! Benchmarks for `traffic`: matching and counting one PUBLISH with 100 dimensions of 5 filters
//! each over 10,000 distinct topics (goal: ≤ 500 ns per message on one core), plus a check, run
//! before the benchmarks, that recording a publish allocates nothing.
//!
//! Run: `cargo bench --bench traffic -- --warm-up-time 1 --measurement-time 3`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, Criterion, Throughput};
use defender_agent::topic_filter::TopicFilter;
use defender_agent::traffic::{
    Direction, Scope, ScopeOperator, Settings, TrafficCounters, TrafficMetric,
};

/// Counts every allocation, to prove the hot path makes none.
struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only adds a relaxed counter increment.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const DIMENSIONS: usize = 100;
const TOPICS: usize = 10_000;

/// 100 scopes of 5 filters, mixing literals, `+` and `#`; every tenth is NOT_IN.
fn scopes() -> Vec<Scope> {
    (0..DIMENSIONS)
        .map(|i| {
            let filters = [
                format!("site/{i}/+/temperature"),
                format!("site/{i}/gateway/#"),
                format!("fleet/+/{i}/status"),
                format!("cmd/{i}/+/+"),
                format!("$aws/things/dev{i}/shadow/#"),
            ];
            Scope {
                name: format!("dim{i}"),
                filters: filters
                    .iter()
                    .map(|f| TopicFilter::parse(f).expect("bench filters are valid"))
                    .collect(),
                operator: if i % 10 == 0 {
                    ScopeOperator::NotIn
                } else {
                    ScopeOperator::In
                },
            }
        })
        .collect()
}

/// 10,000 distinct topics: about half fall in some scope, the rest in none.
fn topics() -> Vec<String> {
    (0..TOPICS)
        .map(|j| {
            let i = j % 130; // 100..129 are outside every scope
            match j % 6 {
                0 => format!("site/{i}/sensor{j}/temperature"),
                1 => format!("site/{i}/gateway/eth0/rx{j}"),
                2 => format!("fleet/truck{j}/{i}/status"),
                3 => format!("cmd/{i}/reboot/{j}"),
                4 => format!("$aws/things/dev{i}/shadow/update/{j}"),
                _ => format!("telemetry/device{j}/metrics/cpu"),
            }
        })
        .collect()
}

fn counters() -> TrafficCounters {
    TrafficCounters::new(scopes(), Settings::default()).expect("bench settings are valid")
}

/// Records `n` publishes over the topic set, 1 ms apart, starting at `start`.
fn run(c: &mut TrafficCounters, topics: &[String], start: SystemTime, n: usize) {
    for k in 0..n {
        let topic = &topics[k % topics.len()];
        let now = start + Duration::from_millis(k as u64);
        let direction = if k % 3 == 0 {
            Direction::Received
        } else {
            Direction::Sent
        };
        c.record_publish(black_box(topic), 100 + (k as u64 % 900), direction, now);
    }
}

/// Fails the bench run if recording allocates (after the first event of the first bucket).
fn check_no_allocation_per_message() {
    let topics = topics();
    let mut c = counters();
    let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    run(&mut c, &topics, start, 1_000);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    // 400 s of traffic at 1 ms: crosses bucket boundaries too.
    run(&mut c, &topics, start + Duration::from_secs(1), 400_000);
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(
        allocations, 0,
        "record_publish allocated {allocations} times in 400,000 calls"
    );
    let end = 1_700_000_400;
    let sent = c
        .window(None, TrafficMetric::MessagesSent, end, 600)
        .expect("aligned window");
    println!("allocation check: 0 allocations in 400,000 record_publish calls ({sent:?} sent in the window)");
}

/// This thread's CPU time: unlike wall time, it does not grow when other processes take the core.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU nanoseconds per message over 2 million messages, printed next to criterion's wall-clock
/// figures because the benchmark machine is shared.
fn report_cpu_time_per_message() {
    const N: usize = 2_000_000;
    let topics = topics();
    let mut c = counters();
    let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    run(&mut c, &topics, start, 10_000);
    let before = thread_cpu_time();
    run(&mut c, &topics, start + Duration::from_secs(10), N);
    let cpu = thread_cpu_time() - before;
    println!(
        "cpu time: {:.0} ns per record_publish ({N} messages, {DIMENSIONS} dimensions x 5 filters, {TOPICS} topics)",
        cpu.as_nanos() as f64 / N as f64
    );
}

fn bench_record(c: &mut Criterion) {
    let topics = topics();
    let mut group = c.benchmark_group("traffic");
    group.throughput(Throughput::Elements(1));

    let mut counters = counters();
    let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut k: usize = 0;
    group.bench_function("record_publish_100x5_filters_10k_topics", |b| {
        b.iter(|| {
            let topic = &topics[k % TOPICS];
            let now = start + Duration::from_millis(k as u64);
            counters.record_publish(black_box(topic), 512, Direction::Sent, now);
            k = k.wrapping_add(1);
        })
    });

    let parsed: Vec<Scope> = scopes();
    let mut j: usize = 0;
    group.bench_function("topic_filter_matches_one_filter", |b| {
        let filter = &parsed[7].filters[0];
        b.iter(|| {
            let hit = filter.matches(black_box(&topics[j % TOPICS]));
            j = j.wrapping_add(1);
            hit
        })
    });

    let mut naive = 0usize;
    group.bench_function("naive_loop_over_500_filters_for_comparison", |b| {
        b.iter(|| {
            let topic = &topics[naive % TOPICS];
            naive = naive.wrapping_add(1);
            parsed
                .iter()
                .filter(|s| s.filters.iter().any(|f| f.matches(topic)))
                .count()
        })
    });
    group.finish();
}

criterion_group!(benches, bench_record);

fn main() {
    check_no_allocation_per_message();
    report_cpu_time_per_message();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
