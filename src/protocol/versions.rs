//! What the broker implements, by API and version range. ApiVersions answers
//! exactly this table (intersected with what the `kafka-protocol` crate can
//! decode), and requests outside it are refused before decoding.
//!
//! The lower bounds reach back to the old versions that kafka-python, aiokafka
//! and sarama still send; the upper bounds cover librdkafka 2.x, franz-go and
//! the Java client 3.x/4.x. Fetch stops at v12: v13+ name topics by id only.
//! OffsetCommit and OffsetFetch stop at v8: v9 belongs to the KIP-848 group
//! protocol, which is not implemented. WriteTxnMarkers (broker to broker) is
//! v1 only: the codec has no v0, which Kafka 4.0 removed.

use kafka_protocol::messages::ApiKey;

/// (API, lowest, highest) implemented by the broker.
pub const API_VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 8),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::DescribeQuorum, 0, 2),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::AlterReplicaLogDirs, 1, 2),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::WriteTxnMarkers, 1, 1),
];

/// The implemented range of `api`, narrowed to what the codec supports.
pub fn supported_range(api: ApiKey) -> Option<(i16, i16)> {
    let (_, min, max) = API_VERSIONS.iter().find(|(k, _, _)| *k == api)?;
    let codec = api.valid_versions();
    let lo = (*min).max(codec.min);
    let hi = (*max).min(codec.max);
    (lo <= hi).then_some((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_advertised_api_is_decodable() {
        for (api, min, max) in API_VERSIONS {
            let (lo, hi) = supported_range(*api).expect("codec supports the API");
            assert_eq!(
                (lo, hi),
                (*min, *max),
                "{api:?} range narrowed by the codec"
            );
        }
    }
}
