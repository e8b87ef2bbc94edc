//! DescribeCluster: the live brokers, the cluster id, and the controller id
//! (as Metadata reports them).

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{DescribeClusterRequest, DescribeClusterResponse};

use super::str_bytes;
use crate::cluster::image;
use crate::protocol::Request;

pub fn handle(req: &Request, body: DescribeClusterRequest) -> DescribeClusterResponse {
    let img = image();
    let mut resp = DescribeClusterResponse::default();
    resp.cluster_id = str_bytes(&img.cluster_id);
    resp.controller_id = super::metadata::controller_id(&img).into();
    if req.version >= 1 {
        resp.endpoint_type = body.endpoint_type;
    }
    resp.brokers = super::metadata::brokers(&img, req.version)
        .into_iter()
        .map(|(id, host, port, rack)| {
            let mut b = DescribeClusterBroker::default();
            b.broker_id = id.into();
            b.host = str_bytes(&host);
            b.port = port;
            b.rack = rack.map(|r| str_bytes(&r));
            b
        })
        .collect();
    resp.cluster_authorized_operations = i32::MIN;
    resp
}
