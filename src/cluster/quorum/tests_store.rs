//! Storage tests of the quorum: openraft's storage conformance suite against the log store and
//! the state machine adapter, torn and corrupt log tails, and decoders fed random bytes.

use std::io::Write;
use std::sync::{Arc, Mutex};

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;

use super::codec;
use super::machine::{self, MachineAdapter};
use super::network;
use super::store::{self, LogStore};
use super::types::{self, Entry, TypeConfig};
use super::StateMachine;

/// Applied entries: index and payload.
type Applied = Vec<(u64, Vec<u8>)>;

/// A state machine that records what it is given.
#[derive(Clone, Default)]
pub struct Recorder {
    pub applied: Arc<Mutex<Applied>>,
    pub restores: Arc<Mutex<usize>>,
}

impl Recorder {
    pub fn payloads(&self) -> Vec<Vec<u8>> {
        self.applied
            .lock()
            .unwrap()
            .iter()
            .map(|(_, p)| p.clone())
            .collect()
    }

    pub fn entries(&self) -> Vec<(u64, Vec<u8>)> {
        self.applied.lock().unwrap().clone()
    }
}

impl StateMachine for Recorder {
    fn apply(&mut self, index: u64, payload: &[u8]) {
        self.applied.lock().unwrap().push((index, payload.to_vec()));
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&*self.applied.lock().unwrap()).unwrap()
    }

    fn restore(&mut self, snapshot: &[u8]) -> anyhow::Result<()> {
        let state: Applied = serde_json::from_slice(snapshot)?;
        *self.applied.lock().unwrap() = state;
        *self.restores.lock().unwrap() += 1;
        Ok(())
    }
}

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, MachineAdapter, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, MachineAdapter), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path()).unwrap();
        let sm = MachineAdapter::open(dir.path(), Box::new(Recorder::default())).unwrap();
        Ok((dir, store, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(Suite::test_all(Builder)).unwrap();
}

fn normal(index: u64, data: &[u8]) -> Entry {
    Entry {
        log_id: types::log_id(1, 1, index),
        payload: openraft::EntryPayload::Normal(types::Payload(data.to_vec())),
    }
}

fn blank(index: u64) -> Entry {
    Entry {
        log_id: types::log_id(1, 1, index),
        payload: openraft::EntryPayload::Blank,
    }
}

fn log_path(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join(store::LOG_FILE)
}

#[test]
fn torn_and_corrupt_tails_are_cut_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = LogStore::open(dir.path()).unwrap();
        s.append((0..5).map(|i| normal(i, b"0123456789"))).unwrap();
    }
    let good_len = std::fs::metadata(log_path(dir.path())).unwrap().len();

    // A torn append: half a frame header and garbage after the last entry.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(log_path(dir.path()))
        .unwrap();
    f.write_all(&[7, 0, 0, 0, 1, 2]).unwrap();
    drop(f);
    {
        let s = LogStore::open(dir.path()).unwrap();
        assert_eq!(s.entries(..).unwrap().len(), 5);
        assert_eq!(
            std::fs::metadata(log_path(dir.path())).unwrap().len(),
            good_len
        );
        // Appends continue after the cut.
        s.append([normal(5, b"after")]).unwrap();
    }
    assert_eq!(
        store::check_log_bytes(&std::fs::read(log_path(dir.path())).unwrap()),
        Ok(6)
    );

    // A flipped byte in the last entry: its CRC fails, it is cut (it was never committed).
    let mut bytes = std::fs::read(log_path(dir.path())).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0xff;
    std::fs::write(log_path(dir.path()), &bytes).unwrap();
    assert!(matches!(
        store::check_log_bytes(&bytes),
        Err(store::LogDecodeError::Tail { entries: 5, .. })
    ));
    {
        let s = LogStore::open(dir.path()).unwrap();
        let entries = s.entries(..).unwrap();
        assert_eq!(entries.len(), 5);
        assert_eq!(entries[4].log_id.index, 4);
        // Entry 3 is now committed: losing it is corruption, not a torn tail.
        s.save_committed(Some(types::log_id(1, 1, 3))).unwrap();
    }
    let mut bytes = std::fs::read(log_path(dir.path())).unwrap();
    let scanned = store::scan_log(&bytes).unwrap();
    let third = scanned.entries[3].1 as usize;
    bytes[third + 9] ^= 0xff;
    std::fs::write(log_path(dir.path()), &bytes).unwrap();
    let err = LogStore::open(dir.path()).err().expect("must refuse");
    assert!(err.to_string().contains("committed"), "{err}");
}

#[test]
fn truncate_purge_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = LogStore::open(dir.path()).unwrap();
        s.append((0..10).map(blank)).unwrap();
        s.truncate_after(Some(types::log_id(1, 1, 6))).unwrap();
        s.append([normal(7, b"x")]).unwrap();
        s.purge(types::log_id(1, 1, 3)).unwrap();
        let idx: Vec<u64> = s
            .entries(..)
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect();
        assert_eq!(idx, vec![4, 5, 6, 7]);
        // A second store on the same dir is refused.
        assert!(LogStore::open(dir.path()).is_err());
    }
    let s = LogStore::open(dir.path()).unwrap();
    let idx: Vec<u64> = s
        .entries(5..)
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect();
    assert_eq!(idx, vec![5, 6, 7]);
    let st = s.log_state().unwrap();
    assert_eq!(st.last_purged_log_id.map(|l| l.index), Some(3));
    assert_eq!(st.last_log_id.map(|l| l.index), Some(7));
    // Purging past the last entry (a snapshot installed) leaves an empty log after it.
    s.purge(types::log_id(2, 1, 20)).unwrap();
    assert!(s.entries(..).unwrap().is_empty());
    s.append([blank(21)]).unwrap();
    drop(s);
    let s = LogStore::open(dir.path()).unwrap();
    assert_eq!(
        s.log_state().unwrap().last_log_id.map(|l| l.index),
        Some(21)
    );
}

/// A deterministic stream of pseudo-random numbers (xorshift64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn decoders_never_panic_on_random_bytes() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = LogStore::open(dir.path()).unwrap();
        s.append((0..4).map(|i| normal(i, b"payload"))).unwrap();
        s.purge(types::log_id(1, 1, 0)).unwrap();
    }
    let valid = std::fs::read(log_path(dir.path())).unwrap();
    assert_eq!(store::check_log_bytes(&valid), Ok(3));
    let snap = machine::encode_snapshot(&types::Snapshot {
        meta: Default::default(),
        snapshot: b"state".to_vec(),
    })
    .unwrap();
    assert!(machine::decode_snapshot(&snap).is_ok());

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..4000 {
        let n = (rng.next() % 200) as usize;
        let input = match round % 4 {
            0 => rng.bytes(n),
            1 => {
                let mut b = store::LOG_MAGIC.to_vec();
                b.extend(rng.bytes(n));
                b
            }
            2 => {
                let mut b = valid.clone();
                for _ in 0..1 + rng.next() % 4 {
                    let at = (rng.next() as usize) % b.len();
                    b[at] = rng.next() as u8;
                }
                b.truncate(1 + (rng.next() as usize) % b.len());
                b
            }
            _ => {
                let mut b = snap.clone();
                let at = (rng.next() as usize) % b.len();
                b[at] ^= 1 + (rng.next() as u8 % 255);
                b
            }
        };
        let _ = store::check_log_bytes(&input);
        let _ = machine::decode_snapshot(&input);
        let _ = codec::take_frame(&input);
        let _ = codec::decode::<codec::LogRecord>(&input);
        let _ = network::decode_body::<(network::Header, network::SnapshotRequest)>(&input);
        let _ = network::decode_body::<(
            network::Header,
            openraft::raft::AppendEntriesRequest<TypeConfig>,
        )>(&input);
    }
}

#[test]
fn wire_messages_round_trip() {
    let req = openraft::raft::AppendEntriesRequest::<TypeConfig> {
        vote: types::Vote::new_committed(3, 2),
        prev_log_id: Some(types::log_id(3, 2, 9)),
        entries: vec![normal(10, b"abc"), blank(11)],
        leader_commit: Some(types::log_id(3, 2, 8)),
    };
    let header = network::Header { from: 2, to: 1 };
    let bytes = network::encode_body(&(header, &req)).unwrap();
    let (h, back): (
        network::Header,
        openraft::raft::AppendEntriesRequest<TypeConfig>,
    ) = network::decode_body(&bytes).unwrap();
    assert_eq!((h.from, h.to), (2, 1));
    assert_eq!(back.entries, req.entries);
    assert_eq!(back.prev_log_id, req.prev_log_id);
    assert_eq!(back.vote, req.vote);
}
