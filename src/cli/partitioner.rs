//! Partition choice for `sluice produce`, matching the Java client's default
//! partitioner: an explicit partition wins, a keyed record goes to
//! `toPositive(murmur2(key)) % partitions`, and a keyless record goes round robin.

/// Kafka's murmur2 seed (`0x9747b28c` in `org.apache.kafka.common.utils.Utils`).
const MURMUR2_SEED: u32 = 0x9747_b28c;
/// Murmur2 multiplication constant.
const MURMUR2_M: u32 = 0x5bd1_e995;
/// Murmur2 shift constant.
const MURMUR2_R: u32 = 24;

/// Kafka's murmur2 hash, bit-for-bit the same as `Utils.murmur2(byte[])` in Java.
pub fn murmur2(data: &[u8]) -> i32 {
    let length = data.len();
    // Java takes `int length`; keys longer than i32::MAX bytes cannot exist on the wire.
    let mut h: u32 = MURMUR2_SEED ^ (length as u32);
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(MURMUR2_M);
        k ^= k >> MURMUR2_R;
        k = k.wrapping_mul(MURMUR2_M);
        h = h.wrapping_mul(MURMUR2_M);
        h ^= k;
    }
    // The Java switch falls through from case 3 to case 1.
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(MURMUR2_M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(MURMUR2_M);
    h ^= h >> 15;
    h as i32
}

/// Java's `Utils.toPositive`: clears the sign bit (not `abs`, so `i32::MIN` maps to 0).
pub fn to_positive(n: i32) -> i32 {
    n & 0x7fff_ffff
}

/// Chooses the partition of each record, as the Java client's default partitioner
/// does for keyed records; keyless records rotate over all partitions.
#[derive(Debug)]
pub struct Partitioner {
    explicit: Option<i32>,
    round_robin_next: u32,
}

impl Partitioner {
    /// `explicit` pins every record to one partition.
    pub fn new(explicit: Option<i32>) -> Self {
        Self {
            explicit,
            round_robin_next: 0,
        }
    }

    /// The partition for a record with `key`, out of `partition_count` (> 0) partitions.
    pub fn choose(&mut self, key: Option<&[u8]>, partition_count: i32) -> i32 {
        debug_assert!(partition_count > 0, "a topic has at least one partition");
        if let Some(partition) = self.explicit {
            return partition;
        }
        let count = partition_count.max(1);
        match key {
            Some(key) => to_positive(murmur2(key)) % count,
            None => {
                let partition = (self.round_robin_next % count as u32) as i32;
                self.round_robin_next = self.round_robin_next.wrapping_add(1);
                partition
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference values from Kafka's `UtilsTest.testMurmur2` (Java implementation).
    #[test]
    fn murmur2_matches_java() {
        let cases: &[(&str, i32)] = &[
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ];
        for (input, expected) in cases {
            assert_eq!(murmur2(input.as_bytes()), *expected, "murmur2({input:?})");
        }
    }

    #[test]
    fn to_positive_clears_sign_bit() {
        assert_eq!(to_positive(-973_932_308), 1_173_551_340);
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(to_positive(5), 5);
    }

    #[test]
    fn keyed_records_hash_like_java() {
        let mut p = Partitioner::new(None);
        // toPositive(murmur2("21")) = 1173551340; 1173551340 % 7 = 2
        assert_eq!(p.choose(Some(b"21"), 7), 1_173_551_340 % 7);
        assert_eq!(p.choose(Some(b"21"), 7), p.choose(Some(b"21"), 7));
    }

    #[test]
    fn keyless_records_round_robin() {
        let mut p = Partitioner::new(None);
        let chosen: Vec<i32> = (0..5).map(|_| p.choose(None, 3)).collect();
        assert_eq!(chosen, vec![0, 1, 2, 0, 1]);
    }

    #[test]
    fn explicit_partition_wins() {
        let mut p = Partitioner::new(Some(4));
        assert_eq!(p.choose(Some(b"key"), 8), 4);
        assert_eq!(p.choose(None, 8), 4);
    }
}
