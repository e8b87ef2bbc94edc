//! DescribeCluster: this broker, the cluster id, and the controller (itself).

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{DescribeClusterRequest, DescribeClusterResponse};

use super::{advertised, str_bytes};
use crate::cluster::{image, partition_manager::broker_config};
use crate::protocol::Request;

pub fn handle(req: &Request, body: DescribeClusterRequest) -> DescribeClusterResponse {
    let cfg = broker_config();
    let (host, port) = advertised();
    let mut resp = DescribeClusterResponse::default();
    resp.cluster_id = str_bytes(&image().cluster_id);
    resp.controller_id = cfg.node_id.into();
    if req.version >= 1 {
        resp.endpoint_type = body.endpoint_type;
    }
    let mut b = DescribeClusterBroker::default();
    b.broker_id = cfg.node_id.into();
    b.host = str_bytes(&host);
    b.port = port;
    resp.brokers = vec![b];
    resp.cluster_authorized_operations = i32::MIN;
    resp
}
