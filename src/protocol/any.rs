//! The request body type of every API the broker dispatches
//! (`server::handlers::handle`), chosen by API key: one place for code that
//! needs a body decoded without running its handler, such as the fuzz targets
//! (`fuzz/`), which feed every decoder the broker uses from one input.
//!
//! The list must name the same APIs as the dispatch in `server::handlers`; a
//! test checks that every API in the ApiVersions table has a type here.

use std::fmt::Debug;

use kafka_protocol::messages::*;

use super::{decode_body, FrameError, Request};

/// Something done with a request body once its type is known.
pub trait BodyVisitor {
    type Output;
    fn visit<T>(self, req: &Request) -> Self::Output
    where
        T: kafka_protocol::protocol::Request + PartialEq + Debug;
}

/// Calls `v.visit::<T>` with `T` the request type of `req.api_key`; None for
/// an API the broker does not dispatch.
pub fn visit_body<V: BodyVisitor>(req: &Request, v: V) -> Option<V::Output> {
    Some(match req.api_key {
        ApiKey::ApiVersions => v.visit::<ApiVersionsRequest>(req),
        ApiKey::Metadata => v.visit::<MetadataRequest>(req),
        ApiKey::Produce => v.visit::<ProduceRequest>(req),
        ApiKey::Fetch => v.visit::<FetchRequest>(req),
        ApiKey::ListOffsets => v.visit::<ListOffsetsRequest>(req),
        ApiKey::CreateTopics => v.visit::<CreateTopicsRequest>(req),
        ApiKey::DeleteTopics => v.visit::<DeleteTopicsRequest>(req),
        ApiKey::CreatePartitions => v.visit::<CreatePartitionsRequest>(req),
        ApiKey::DescribeConfigs => v.visit::<DescribeConfigsRequest>(req),
        ApiKey::AlterConfigs => v.visit::<AlterConfigsRequest>(req),
        ApiKey::IncrementalAlterConfigs => v.visit::<IncrementalAlterConfigsRequest>(req),
        ApiKey::DescribeCluster => v.visit::<DescribeClusterRequest>(req),
        ApiKey::DescribeQuorum => v.visit::<DescribeQuorumRequest>(req),
        ApiKey::OffsetForLeaderEpoch => v.visit::<OffsetForLeaderEpochRequest>(req),
        ApiKey::DescribeLogDirs => v.visit::<DescribeLogDirsRequest>(req),
        ApiKey::ElectLeaders => v.visit::<ElectLeadersRequest>(req),
        ApiKey::AlterPartitionReassignments => v.visit::<AlterPartitionReassignmentsRequest>(req),
        ApiKey::ListPartitionReassignments => v.visit::<ListPartitionReassignmentsRequest>(req),
        ApiKey::AlterReplicaLogDirs => v.visit::<AlterReplicaLogDirsRequest>(req),
        ApiKey::InitProducerId => v.visit::<InitProducerIdRequest>(req),
        ApiKey::AddPartitionsToTxn => v.visit::<AddPartitionsToTxnRequest>(req),
        ApiKey::AddOffsetsToTxn => v.visit::<AddOffsetsToTxnRequest>(req),
        ApiKey::EndTxn => v.visit::<EndTxnRequest>(req),
        ApiKey::TxnOffsetCommit => v.visit::<TxnOffsetCommitRequest>(req),
        ApiKey::DescribeTransactions => v.visit::<DescribeTransactionsRequest>(req),
        ApiKey::ListTransactions => v.visit::<ListTransactionsRequest>(req),
        ApiKey::DescribeProducers => v.visit::<DescribeProducersRequest>(req),
        ApiKey::WriteTxnMarkers => v.visit::<WriteTxnMarkersRequest>(req),
        ApiKey::FindCoordinator => v.visit::<FindCoordinatorRequest>(req),
        ApiKey::JoinGroup => v.visit::<JoinGroupRequest>(req),
        ApiKey::SyncGroup => v.visit::<SyncGroupRequest>(req),
        ApiKey::Heartbeat => v.visit::<HeartbeatRequest>(req),
        ApiKey::LeaveGroup => v.visit::<LeaveGroupRequest>(req),
        ApiKey::OffsetCommit => v.visit::<OffsetCommitRequest>(req),
        ApiKey::OffsetFetch => v.visit::<OffsetFetchRequest>(req),
        ApiKey::ListGroups => v.visit::<ListGroupsRequest>(req),
        ApiKey::DescribeGroups => v.visit::<DescribeGroupsRequest>(req),
        ApiKey::DeleteGroups => v.visit::<DeleteGroupsRequest>(req),
        ApiKey::OffsetDelete => v.visit::<OffsetDeleteRequest>(req),
        _ => return None,
    })
}

/// Decodes `req`'s body into the type its handler takes, through
/// `decode_body` (so with the same checks), and drops it.
pub fn decode_any_body(req: &Request) -> Result<(), FrameError> {
    struct Decode;
    impl BodyVisitor for Decode {
        type Output = Result<(), FrameError>;
        fn visit<T>(self, req: &Request) -> Self::Output
        where
            T: kafka_protocol::protocol::Request + PartialEq + Debug,
        {
            decode_body::<T>(req).map(drop)
        }
    }
    visit_body(req, Decode).unwrap_or(Err(FrameError::UnsupportedVersion {
        api: req.api_key,
        version: req.version,
        min: -1,
        max: -1,
    }))
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};

    use super::*;
    use crate::protocol::API_VERSIONS;
    use kafka_protocol::protocol::Encodable;

    fn request(api_key: ApiKey, version: i16, body: Bytes) -> Request {
        Request {
            api_key,
            version,
            header: RequestHeader::default(),
            body,
        }
    }

    /// The type name `visit_body` picks for an API key.
    struct TypeName;
    impl BodyVisitor for TypeName {
        type Output = &'static str;
        fn visit<T>(self, _: &Request) -> &'static str
        where
            T: kafka_protocol::protocol::Request + PartialEq + Debug,
        {
            std::any::type_name::<T>()
        }
    }

    #[test]
    fn every_implemented_api_has_its_request_type() {
        for (api, _, _) in API_VERSIONS {
            let req = request(*api, 0, Bytes::new());
            let name = visit_body(&req, TypeName).expect("a body type for every implemented API");
            // ApiKey::Fetch -> "...::FetchRequest"
            assert!(
                name.ends_with(&format!("::{api:?}Request")),
                "{api:?}: {name}"
            );
        }
        let unsupported = request(ApiKey::SaslHandshake, 0, Bytes::new());
        assert!(visit_body(&unsupported, TypeName).is_none());
        assert!(decode_any_body(&unsupported).is_err());
    }

    #[test]
    fn decodes_a_body_and_refuses_a_truncated_one() {
        let mut body = BytesMut::new();
        let mut m = MetadataRequest::default();
        m.allow_auto_topic_creation = true;
        m.encode(&mut body, 9).expect("encode");
        let body = body.freeze();
        assert!(decode_any_body(&request(ApiKey::Metadata, 9, body.clone())).is_ok());
        let short = body.slice(..body.len() - 1);
        assert!(decode_any_body(&request(ApiKey::Metadata, 9, short)).is_err());
    }
}
