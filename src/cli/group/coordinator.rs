//! Finding a group's coordinator (FindCoordinator) and sending it requests,
//! asking again, a bounded number of times, while the coordinator is loading
//! the group from `__consumer_offsets` or the group has moved.

use std::thread::sleep;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use kafka_protocol::messages::metadata_response::MetadataResponseBroker;
use kafka_protocol::messages::FindCoordinatorRequest;
use kafka_protocol::protocol::{Request, StrBytes};

use crate::cli::client::{check_error, error_name, Cluster};

/// FindCoordinator key type of a consumer group.
pub const KEY_TYPE_GROUP: i8 = 0;
/// FindCoordinator key type of a transactional id.
pub const KEY_TYPE_TRANSACTION: i8 = 1;
/// FindCoordinator v4 batches keys; earlier versions take one key.
const FIND_COORDINATOR_VERSION_MAX: i16 = 4;
/// How many times a request is sent while the answer is a retriable
/// coordinator error, and the pause between tries (5 s in all).
const TRIES_MAX: u32 = 20;
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// Coordinator errors after which finding the coordinator again and resending
/// can succeed: COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR.
pub fn is_retriable(code: i16) -> bool {
    matches!(code, 14..=16)
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// The broker that coordinates `group`, as a Metadata broker entry, or the
/// retriable error code it answered.
fn find_once(
    cluster: &mut Cluster,
    key_type: i8,
    group: &str,
) -> Result<Result<MetadataResponseBroker, i16>> {
    let client = cluster.bootstrap();
    let min = if key_type == KEY_TYPE_GROUP { 0 } else { 1 };
    let version =
        client.version_for::<FindCoordinatorRequest>(min, FIND_COORDINATOR_VERSION_MAX)?;
    let mut request = FindCoordinatorRequest::default().with_key_type(key_type);
    if version >= 4 {
        request.coordinator_keys = vec![str_bytes(group)];
    } else {
        request.key = str_bytes(group);
    }
    let response = client.send(version, &request)?;
    let (code, message, node_id, host, port) = if version >= 4 {
        let c = response
            .coordinators
            .iter()
            .find(|c| c.key.as_str() == group)
            .ok_or_else(|| anyhow!("broker sent no coordinator for {group:?}"))?;
        (
            c.error_code,
            c.error_message.clone(),
            c.node_id,
            c.host.clone(),
            c.port,
        )
    } else {
        (
            response.error_code,
            response.error_message.clone(),
            response.node_id,
            response.host.clone(),
            response.port,
        )
    };
    if is_retriable(code) {
        return Ok(Err(code));
    }
    check_error(
        code,
        message.as_ref(),
        &format!("cannot find the coordinator of {group:?}"),
    )?;
    Ok(Ok(MetadataResponseBroker::default()
        .with_node_id(node_id)
        .with_host(host)
        .with_port(port)))
}

/// Sends the request `build(version)` to the coordinator of `group` at the
/// highest version in `min..=max` it supports, and returns the response and
/// the version. While `group_error(&response)` is a retriable coordinator
/// error, finds the coordinator again and resends, up to `TRIES_MAX` times.
pub fn call<R: Request>(
    cluster: &mut Cluster,
    group: &str,
    versions: (i16, i16),
    build: impl Fn(i16) -> R,
    group_error: impl Fn(&R::Response, i16) -> i16,
) -> Result<(R::Response, i16)> {
    call_keyed(cluster, KEY_TYPE_GROUP, group, versions, build, group_error)
}

/// `call` for any coordinator key type (group or transactional id).
pub fn call_keyed<R: Request>(
    cluster: &mut Cluster,
    key_type: i8,
    group: &str,
    (min, max): (i16, i16),
    build: impl Fn(i16) -> R,
    group_error: impl Fn(&R::Response, i16) -> i16,
) -> Result<(R::Response, i16)> {
    let mut last_code = 0;
    for attempt in 0..TRIES_MAX {
        if attempt > 0 {
            sleep(RETRY_PAUSE);
        }
        let coordinator = match find_once(cluster, key_type, group)? {
            Ok(broker) => broker,
            Err(code) => {
                last_code = code;
                continue;
            }
        };
        let client = cluster.node(coordinator.node_id.0, std::slice::from_ref(&coordinator))?;
        let version = client.version_for::<R>(min, max)?;
        let response = client.send(version, &build(version))?;
        let code = group_error(&response, version);
        if is_retriable(code) {
            last_code = code;
            continue;
        }
        return Ok((response, version));
    }
    bail!(
        "the coordinator of {group:?} still answers {} after {TRIES_MAX} tries",
        error_name(last_code)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retriable_codes_are_the_coordinator_ones() {
        assert!(is_retriable(14) && is_retriable(15) && is_retriable(16));
        assert!(!is_retriable(0) && !is_retriable(13) && !is_retriable(17) && !is_retriable(69));
    }
}
