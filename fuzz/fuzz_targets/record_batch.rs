//! Fuzz target `record_batch`: see `sluice::fuzzing::record_batch` for the input format and the invariants.
#![no_main]

#[global_allocator]
static ALLOC: sluice_fuzz::CappedAlloc = sluice_fuzz::CappedAlloc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice::fuzzing::record_batch(data);
});
