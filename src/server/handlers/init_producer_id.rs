//! InitProducerId: a new producer id (epoch 0) for an idempotent producer.
//! Every call without a transactional id gets a fresh id, as Kafka does: an
//! idempotent producer that must reset its sequences (KIP-360) simply asks
//! again. Transactional ids need the transaction coordinator, which is not
//! there yet: they are answered COORDINATOR_NOT_AVAILABLE.

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::cluster::producer_ids;

pub async fn handle(body: InitProducerIdRequest) -> InitProducerIdResponse {
    let mut resp = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if body
        .transactional_id
        .as_ref()
        .is_some_and(|t| !t.is_empty())
    {
        resp.error_code = E::CoordinatorNotAvailable.code();
        return resp;
    }
    match producer_ids::next_producer_id().await {
        Ok(id) => {
            resp.producer_id = ProducerId(id);
            resp.producer_epoch = 0;
        }
        Err(r) => {
            tracing::error!(code = r.code, message = %r.message, "allocating a producer id failed");
            resp.error_code = E::CoordinatorNotAvailable.code();
        }
    }
    resp
}
