//! The measuring binaries' heap: memory faulted in before timing is what later runs get.

use lockstep_harness::bench;

#[global_allocator]
static ALLOCATOR: bench::Allocator = bench::Allocator;

/// Page faults this process has taken that needed no disk (Linux's `minflt`).
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("Linux /proc");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    fields[7].parse().unwrap()
}

/// Faults taken while `bytes` are allocated in 1 MiB pieces, each written in full, and kept
/// until all are: as a block's outcomes are built.
fn faults_to_fill(bytes: usize) -> u64 {
    let before = minor_faults();
    let pieces: Vec<Vec<u8>> = (0..bytes >> 20).map(|_| vec![7; 1 << 20]).collect();
    let after = minor_faults();
    drop(std::hint::black_box(pieces));
    after - before
}

#[test]
fn a_prefaulted_heap_serves_later_allocations_without_faults() {
    bench::keep_freed_memory();
    // Fresh memory faults: at least once per 2 MiB, however the kernel maps it.
    let fresh = faults_to_fill(64 << 20);
    assert!(fresh >= 32, "fresh memory took only {fresh} faults");
    bench::prefault_heap(256 << 20);
    let reused = faults_to_fill(128 << 20);
    assert!(reused * 8 < fresh, "{reused} faults on prefaulted memory, {fresh} on fresh");
}
