//! Fuzz target `storage_files`: see `sluice::fuzzing::storage_files` for the input format and the invariants.
#![no_main]

#[global_allocator]
static ALLOC: sluice_fuzz::CappedAlloc = sluice_fuzz::CappedAlloc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sluice::fuzzing::storage_files(data);
});
