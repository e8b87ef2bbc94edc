//! Producer ids for InitProducerId. The controller hands out blocks of
//! `PRODUCER_ID_BLOCK` ids, persisted in the metadata before use, so an id is
//! never given twice, even after a crash; each shard spends its own block.

use std::cell::Cell;

use super::controller::{self, Refusal, PRODUCER_ID_BLOCK};

thread_local! {
    /// (next id, end of the block) of this shard; empty at start.
    static BLOCK: Cell<(i64, i64)> = const { Cell::new((0, 0)) };
}

/// A producer id no one has had before.
pub async fn next_producer_id() -> Result<i64, Refusal> {
    let (next, end) = BLOCK.with(Cell::get);
    if next < end {
        BLOCK.with(|b| b.set((next + 1, end)));
        return Ok(next);
    }
    let start = controller::allocate_producer_ids().await?;
    // Another task of this shard may have refilled the block meanwhile: the
    // newer block wins and the other is simply never used.
    BLOCK.with(|b| b.set((start + 1, start + PRODUCER_ID_BLOCK)));
    Ok(start)
}
