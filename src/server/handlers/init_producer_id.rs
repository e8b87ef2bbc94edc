//! InitProducerId. Without a transactional id: a fresh producer id (epoch 0)
//! for an idempotent producer, as Kafka does (a producer that must reset its
//! sequences, KIP-360, simply asks again). With one: the transaction
//! coordinator of that id bumps the epoch (fencing older producers) or
//! aborts the transaction it still has open first.

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::txn::on_txn_coordinator;
use crate::cluster::producer_ids;
use crate::protocol::Request;
use crate::txn::coordinator;
use crate::txn::transition::expected_producer;

pub async fn handle(req: &Request, body: InitProducerIdRequest) -> InitProducerIdResponse {
    let v = req.version;
    let mut resp = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if let Some(tid) = body.transactional_id.as_ref().filter(|t| !t.is_empty()) {
        let id = tid.0.as_str().to_string();
        let expected = if v >= 3 {
            match expected_producer(body.producer_id.0, body.producer_epoch) {
                Ok(e) => e,
                Err(e) => {
                    resp.error_code = e.code();
                    return resp;
                }
            }
        } else {
            None
        };
        let timeout = body.transaction_timeout_ms;
        let r = on_txn_coordinator(&id.clone(), move || {
            coordinator::init_producer_id(id, timeout, expected, v)
        })
        .await;
        match r {
            Ok(Ok((pid, epoch))) => {
                resp.producer_id = ProducerId(pid);
                resp.producer_epoch = epoch;
            }
            Ok(Err(c)) | Err(c) => resp.error_code = c,
        }
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
