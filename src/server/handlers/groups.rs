//! Group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups and
//! OffsetDelete. Each group's part of a request runs on the group's
//! coordinator shard (`group::coordinator`); this file only translates
//! between the wire structures and that module, fields gated by version.

use std::future::Future;

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{advertised, str_bytes, topic_name, topic_str};
use crate::cluster::partition_manager::broker_config;
use crate::group::coordinator::{self, CommitItem, FetchedTopic};
use crate::group::state::{JoinRequest, SyncRequest};
use crate::group::{ensure_offsets_topic, locate};
use crate::protocol::Request;
use crate::runtime;

fn s(v: &StrBytes) -> String {
    v.as_str().to_string()
}

fn opt(v: &Option<StrBytes>) -> Option<String> {
    v.as_ref().map(s)
}

/// Runs `f` on the coordinator shard of `group`. Err: a Kafka error code.
pub(crate) async fn on_group_coordinator<T, F, Fut>(group: &str, f: F) -> Result<T, i16>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    ensure_offsets_topic().await?;
    let (partition, shard) = locate(group).ok_or(E::CoordinatorNotAvailable.code())?;
    super::check_coordinator(crate::group::OFFSETS_TOPIC, partition)?;
    runtime::submit_to(shard, move || async move {
        if !super::wait_loaded(|| coordinator::loaded_partition(partition)).await {
            return Err(E::CoordinatorLoadInProgress.code());
        }
        Ok(f().await)
    })
    .await
    .map_err(|_| E::CoordinatorNotAvailable.code())?
}

/// Where clients reach broker `id`: this broker's own advertised address, or the one it
/// registered in the metadata.
fn coordinator_address(img: &crate::cluster::MetadataImage, id: i32) -> Option<(String, i32)> {
    if id < 0 {
        return None;
    }
    if id == broker_config().node_id {
        return Some(advertised());
    }
    crate::cluster::broker_address(img, id)
}

pub async fn find_coordinator(
    req: &Request,
    body: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let v = req.version;
    let keys: Vec<StrBytes> = if v >= 4 {
        body.coordinator_keys.clone()
    } else {
        vec![body.key.clone()]
    };
    let mut coords = Vec::with_capacity(keys.len());
    for key in keys {
        let (mut code, mut message) = match body.key_type {
            0 => match ensure_offsets_topic().await {
                Ok(()) => (0, None),
                Err(c) => (c, Some("the offsets topic is not available".to_string())),
            },
            1 => match crate::txn::coordinator::ensure_topic().await {
                Ok(()) => (0, None),
                Err(c) => (
                    c,
                    Some("the transaction state topic is not available".to_string()),
                ),
            },
            _ => (
                E::InvalidRequest.code(),
                Some(format!("unknown coordinator key type {}", body.key_type)),
            ),
        };
        // The coordinator is the broker leading the key's internal partition.
        let (mut node, mut host, mut port) = (-1, String::new(), -1);
        if code == 0 {
            let (topic, partition) = if body.key_type == 0 {
                (
                    crate::group::OFFSETS_TOPIC,
                    crate::group::locate(key.as_str()).map(|(p, _)| p),
                )
            } else {
                (
                    crate::txn::TXN_STATE_TOPIC,
                    crate::txn::coordinator::partition_of(key.as_str()),
                )
            };
            let img = crate::cluster::image();
            let leader = partition.map_or(-1, |p| crate::cluster::leader_of(&img, topic, p));
            match coordinator_address(&img, leader) {
                Some((h, p)) => (node, host, port) = (leader, h, p),
                None => {
                    code = E::CoordinatorNotAvailable.code();
                    message = Some(format!(
                        "the coordinator's partition of {topic} has no live leader"
                    ));
                }
            }
        }
        let ok = code == 0;
        coords.push(
            Coordinator::default()
                .with_key(key)
                .with_node_id(BrokerId(node))
                .with_host(str_bytes(if ok { &host } else { "" }))
                .with_port(if ok { port } else { -1 })
                .with_error_code(code)
                .with_error_message(message.map(|m| str_bytes(&m))),
        );
    }
    let mut resp = FindCoordinatorResponse::default();
    if v >= 4 {
        resp.coordinators = coords;
    } else if let Some(c) = coords.pop() {
        resp.error_code = c.error_code;
        resp.node_id = c.node_id;
        resp.host = c.host;
        resp.port = c.port;
        if v >= 1 {
            resp.error_message = c.error_message;
        }
    }
    resp
}

pub async fn join_group(
    req: &Request,
    body: JoinGroupRequest,
    client_host: &str,
) -> JoinGroupResponse {
    let v = req.version;
    let group = s(&body.group_id.0);
    let mut resp = JoinGroupResponse::default();
    if group.is_empty() {
        resp.error_code = E::InvalidGroupId.code();
        resp.generation_id = -1;
        return resp;
    }
    let jr = JoinRequest {
        member_id: s(&body.member_id),
        instance_id: if v >= 5 {
            opt(&body.group_instance_id)
        } else {
            None
        },
        client_id: req.header.client_id.as_ref().map(s).unwrap_or_default(),
        client_host: format!("/{client_host}"),
        session_timeout_ms: body.session_timeout_ms,
        rebalance_timeout_ms: if v >= 1 {
            body.rebalance_timeout_ms
        } else {
            body.session_timeout_ms
        },
        protocol_type: s(&body.protocol_type),
        protocols: body
            .protocols
            .iter()
            .map(|p| (s(&p.name), p.metadata.clone()))
            .collect(),
        require_known_member_id: v >= 4,
    };
    let g = group.clone();
    let r = match on_group_coordinator(&group, move || coordinator::join(g, jr)).await {
        Ok(r) => r,
        Err(code) => {
            resp.error_code = code;
            resp.generation_id = -1;
            resp.member_id = body.member_id;
            return resp;
        }
    };
    resp.error_code = r.error;
    resp.generation_id = r.generation;
    resp.leader = str_bytes(&r.leader);
    resp.member_id = str_bytes(&r.member_id);
    resp.protocol_name = Some(str_bytes(r.protocol_name.as_deref().unwrap_or("")));
    if v >= 7 {
        resp.protocol_type = r.protocol_type.as_deref().map(str_bytes);
        resp.protocol_name = r.protocol_name.as_deref().map(str_bytes);
    }
    resp.members = r
        .members
        .into_iter()
        .map(|(id, inst, meta)| {
            JoinGroupResponseMember::default()
                .with_member_id(str_bytes(&id))
                .with_group_instance_id(if v >= 5 {
                    inst.as_deref().map(str_bytes)
                } else {
                    None
                })
                .with_metadata(meta)
        })
        .collect();
    resp
}

pub async fn sync_group(req: &Request, body: SyncGroupRequest) -> SyncGroupResponse {
    let v = req.version;
    let group = s(&body.group_id.0);
    let mut resp = SyncGroupResponse::default();
    if group.is_empty() {
        resp.error_code = E::InvalidGroupId.code();
        return resp;
    }
    let sr = SyncRequest {
        member_id: s(&body.member_id),
        instance_id: if v >= 3 {
            opt(&body.group_instance_id)
        } else {
            None
        },
        generation: body.generation_id,
        protocol_type: if v >= 5 {
            opt(&body.protocol_type)
        } else {
            None
        },
        protocol_name: if v >= 5 {
            opt(&body.protocol_name)
        } else {
            None
        },
        assignments: body
            .assignments
            .iter()
            .map(|a| (s(&a.member_id), a.assignment.clone()))
            .collect(),
    };
    let g = group.clone();
    match on_group_coordinator(&group, move || coordinator::sync(g, sr)).await {
        Ok(r) => {
            resp.error_code = r.error;
            resp.assignment = r.assignment;
            if v >= 5 {
                resp.protocol_type = r.protocol_type.as_deref().map(str_bytes);
                resp.protocol_name = r.protocol_name.as_deref().map(str_bytes);
            }
        }
        Err(code) => resp.error_code = code,
    }
    resp
}

pub async fn heartbeat(req: &Request, body: HeartbeatRequest) -> HeartbeatResponse {
    let group = s(&body.group_id.0);
    let mut resp = HeartbeatResponse::default();
    if group.is_empty() {
        resp.error_code = E::InvalidGroupId.code();
        return resp;
    }
    let (g, m) = (group.clone(), s(&body.member_id));
    let inst = if req.version >= 3 {
        opt(&body.group_instance_id)
    } else {
        None
    };
    let gen = body.generation_id;
    resp.error_code = on_group_coordinator(&group, move || async move {
        coordinator::heartbeat(g, m, inst, gen)
    })
    .await
    .unwrap_or_else(|c| c);
    resp
}

pub async fn leave_group(req: &Request, body: LeaveGroupRequest) -> LeaveGroupResponse {
    let v = req.version;
    let group = s(&body.group_id.0);
    let mut resp = LeaveGroupResponse::default();
    if group.is_empty() {
        resp.error_code = E::InvalidGroupId.code();
        return resp;
    }
    let members: Vec<(String, Option<String>)> = if v >= 3 {
        body.members
            .iter()
            .map(|m| (s(&m.member_id), opt(&m.group_instance_id)))
            .collect()
    } else {
        vec![(s(&body.member_id), None)]
    };
    let g = group.clone();
    let ms = members.clone();
    let codes = match on_group_coordinator(&group, move || coordinator::leave(g, ms)).await {
        Ok(c) => c,
        Err(code) => {
            resp.error_code = code;
            return resp;
        }
    };
    if v >= 3 {
        resp.members = members
            .into_iter()
            .zip(codes)
            .map(|((m, i), c)| {
                MemberResponse::default()
                    .with_member_id(str_bytes(&m))
                    .with_group_instance_id(i.as_deref().map(str_bytes))
                    .with_error_code(c)
            })
            .collect();
    } else {
        resp.error_code = codes.first().copied().unwrap_or(0);
    }
    resp
}

pub async fn offset_commit(req: &Request, body: OffsetCommitRequest) -> OffsetCommitResponse {
    let v = req.version;
    let group = s(&body.group_id.0);
    let mut items = Vec::new();
    for t in &body.topics {
        for p in &t.partitions {
            items.push(CommitItem {
                topic: topic_str(&t.name),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: if v >= 6 { p.committed_leader_epoch } else { -1 },
                metadata: opt(&p.committed_metadata),
            });
        }
    }
    let member = s(&body.member_id);
    let inst = if v >= 7 {
        opt(&body.group_instance_id)
    } else {
        None
    };
    let gen = body.generation_id_or_member_epoch;
    let g = group.clone();
    let n = items.len();
    let codes = match on_group_coordinator(&group, move || {
        coordinator::commit(g, member, inst, gen, items)
    })
    .await
    {
        Ok(Ok(codes)) => codes,
        Ok(Err(code)) | Err(code) => vec![code; n],
    };
    let mut codes = codes.into_iter();
    let topics = body
        .topics
        .iter()
        .map(|t| {
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(codes.next().unwrap_or(0))
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// One group's offsets, or a group-level error.
async fn fetch_group(
    group: String,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Result<Vec<FetchedTopic>, i16> {
    let g = group.clone();
    on_group_coordinator(&group, move || async move {
        coordinator::fetch_offsets(g, topics, require_stable)
    })
    .await
}

pub async fn offset_fetch(req: &Request, body: OffsetFetchRequest) -> OffsetFetchResponse {
    let v = req.version;
    let mut resp = OffsetFetchResponse::default();
    if v >= 8 {
        for g in &body.groups {
            let topics = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (topic_str(&t.name), t.partition_indexes.clone()))
                    .collect()
            });
            let mut out = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
            match fetch_group(s(&g.group_id.0), topics, body.require_stable).await {
                Ok(ts) => {
                    out.topics = ts
                        .into_iter()
                        .map(|(t, ps)| {
                            OffsetFetchResponseTopics::default()
                                .with_name(topic_name(&t))
                                .with_partitions(
                                    ps.into_iter()
                                        .map(|(p, o, code)| {
                                            let (off, epoch, meta) = split(o);
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(p)
                                                .with_error_code(code)
                                                .with_committed_offset(off)
                                                .with_committed_leader_epoch(epoch)
                                                .with_metadata(Some(str_bytes(&meta)))
                                        })
                                        .collect(),
                                )
                        })
                        .collect()
                }
                Err(code) => out.error_code = code,
            }
            resp.groups.push(out);
        }
        return resp;
    }
    let topics = body.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (topic_str(&t.name), t.partition_indexes.clone()))
            .collect()
    });
    let stable = v >= 7 && body.require_stable;
    match fetch_group(s(&body.group_id.0), topics, stable).await {
        Ok(ts) => {
            resp.topics = ts
                .into_iter()
                .map(|(t, ps)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(topic_name(&t))
                        .with_partitions(
                            ps.into_iter()
                                .map(|(p, o, code)| {
                                    let (off, epoch, meta) = split(o);
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_error_code(code)
                                        .with_committed_offset(off)
                                        .with_committed_leader_epoch(if v >= 5 {
                                            epoch
                                        } else {
                                            -1
                                        })
                                        .with_metadata(Some(str_bytes(&meta)))
                                })
                                .collect(),
                        )
                })
                .collect();
        }
        Err(code) => {
            if v >= 2 {
                resp.error_code = code;
            }
        }
    }
    resp
}

fn split(o: Option<crate::group::records::OffsetValue>) -> (i64, i32, String) {
    match o {
        Some(v) => (v.offset, v.leader_epoch, v.metadata),
        None => (-1, -1, String::new()),
    }
}

pub async fn list_groups(req: &Request, body: ListGroupsRequest) -> ListGroupsResponse {
    let filter: Vec<String> = if req.version >= 4 {
        body.states_filter.iter().map(s).collect()
    } else {
        Vec::new()
    };
    let mut resp = ListGroupsResponse::default();
    if ensure_offsets_topic().await.is_err() {
        resp.error_code = E::CoordinatorNotAvailable.code();
        return resp;
    }
    let mut all = Vec::new();
    for shard in 0..runtime::nr_shards() {
        let listed = runtime::submit_to(shard, || async {
            coordinator::loaded().then(coordinator::list)
        })
        .await;
        match listed {
            Ok(Some(gs)) => all.extend(gs),
            Ok(None) => resp.error_code = E::CoordinatorLoadInProgress.code(),
            Err(_) => resp.error_code = E::CoordinatorNotAvailable.code(),
        }
    }
    all.sort();
    resp.groups = all
        .into_iter()
        .filter(|(_, _, st)| filter.is_empty() || filter.iter().any(|f| f.eq_ignore_ascii_case(st)))
        .map(|(g, pt, st)| {
            let mut l = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(&g)))
                .with_protocol_type(str_bytes(&pt));
            if req.version >= 4 {
                l.group_state = str_bytes(&st);
            }
            if req.version >= 5 {
                l.group_type = str_bytes("classic");
            }
            l
        })
        .collect();
    resp
}

pub async fn describe_groups(req: &Request, body: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let v = req.version;
    let mut resp = DescribeGroupsResponse::default();
    for gid in &body.groups {
        let group = s(&gid.0);
        let g = group.clone();
        let mut out = DescribedGroup::default().with_group_id(gid.clone());
        if v >= 3 {
            out.authorized_operations = if body.include_authorized_operations {
                // Every group operation (no ACLs yet): READ, DELETE, DESCRIBE.
                (1 << 3) | (1 << 6) | (1 << 8)
            } else {
                i32::MIN
            };
        }
        match on_group_coordinator(&group, move || async move { coordinator::describe(g) }).await {
            Ok(sum) => {
                out.group_state = str_bytes(&sum.state);
                out.protocol_type = str_bytes(&sum.protocol_type);
                out.protocol_data = str_bytes(&sum.protocol);
                out.members = sum
                    .members
                    .into_iter()
                    .map(|m| {
                        DescribedGroupMember::default()
                            .with_member_id(str_bytes(&m.member_id))
                            .with_group_instance_id(if v >= 4 {
                                m.instance_id.as_deref().map(str_bytes)
                            } else {
                                None
                            })
                            .with_client_id(str_bytes(&m.client_id))
                            .with_client_host(str_bytes(&m.client_host))
                            .with_member_metadata(m.metadata)
                            .with_member_assignment(m.assignment)
                    })
                    .collect();
            }
            Err(code) => out.error_code = code,
        }
        resp.groups.push(out);
    }
    resp
}

pub async fn delete_groups(body: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut resp = DeleteGroupsResponse::default();
    for gid in &body.groups_names {
        let group = s(&gid.0);
        let g = group.clone();
        let code = on_group_coordinator(&group, move || coordinator::delete(g))
            .await
            .unwrap_or_else(|c| c);
        resp.results.push(
            DeletableGroupResult::default()
                .with_group_id(gid.clone())
                .with_error_code(code),
        );
    }
    resp
}

pub async fn offset_delete(body: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group = s(&body.group_id.0);
    let topics: Vec<(String, Vec<i32>)> = body
        .topics
        .iter()
        .map(|t| {
            (
                topic_str(&t.name),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    let g = group.clone();
    let mut resp = OffsetDeleteResponse::default();
    match on_group_coordinator(&group, move || coordinator::delete_offsets(g, topics)).await {
        Ok(Ok(ts)) => {
            resp.topics = ts
                .into_iter()
                .map(|(t, ps)| {
                    OffsetDeleteResponseTopic::default()
                        .with_name(topic_name(&t))
                        .with_partitions(
                            ps.into_iter()
                                .map(|(p, c)| {
                                    OffsetDeleteResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_error_code(c)
                                })
                                .collect(),
                        )
                })
                .collect()
        }
        Ok(Err(code)) | Err(code) => resp.error_code = code,
    }
    resp
}
