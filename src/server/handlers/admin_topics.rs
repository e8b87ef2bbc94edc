//! CreateTopics, DeleteTopics and CreatePartitions: translate to the
//! controller's changes and its refusals back to Kafka errors.

use std::collections::{BTreeMap, HashSet};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse,
};

use super::{str_bytes, topic_name, topic_str};
use crate::cluster::controller::{self, NewTopic, Refusal};
use crate::cluster::{image, partition_manager::broker_config};
use crate::config::TOPIC_CONFIGS;
use crate::protocol::Request;

pub async fn create_topics(req: &Request, body: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut results: Vec<CreatableTopicResult> = Vec::new();
    let mut todo = Vec::new();
    let mut seen = HashSet::new();
    let dupes: HashSet<String> = body
        .topics
        .iter()
        .map(|t| topic_str(&t.name))
        .filter(|n| !seen.insert(n.clone()))
        .collect();
    for t in &body.topics {
        let name = topic_str(&t.name);
        let mut r = CreatableTopicResult::default();
        r.name = topic_name(&name);
        let refused = (|| {
            if dupes.contains(&name) {
                return Err(Refusal { code: ResponseError::InvalidRequest.code(), message: format!("Create topics request from client contains multiple entries for topic {name}") });
            }
            let mut configs = BTreeMap::new();
            for c in &t.configs {
                let Some(v) = &c.value else {
                    return Err(Refusal {
                        code: ResponseError::InvalidConfig.code(),
                        message: format!(
                            "Null value not supported for topic config {}",
                            c.name.as_str()
                        ),
                    });
                };
                configs.insert(c.name.as_str().to_string(), v.as_str().to_string());
            }
            let mut partitions = t.num_partitions;
            let mut rf = t.replication_factor;
            let mut assignment = None;
            if !t.assignments.is_empty() {
                if partitions != -1 || rf != -1 {
                    return Err(Refusal { code: ResponseError::InvalidRequest.code(), message: "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.".into() });
                }
                let mut lists: Vec<(i32, Vec<i32>)> = t
                    .assignments
                    .iter()
                    .map(|a| {
                        (
                            a.partition_index,
                            a.broker_ids.iter().map(|b| b.0).collect(),
                        )
                    })
                    .collect();
                lists.sort_by_key(|(i, _)| *i);
                if lists.iter().enumerate().any(|(n, (i, _))| *i != n as i32) {
                    return Err(Refusal {
                        code: ResponseError::InvalidReplicaAssignment.code(),
                        message: "Partitions should be a consecutive 0-based integer sequence"
                            .into(),
                    });
                }
                assignment = Some(lists.into_iter().map(|(_, l)| l).collect::<Vec<_>>());
                partitions = -1;
                rf = -1;
            }
            let new = NewTopic {
                name: name.clone(),
                partitions,
                replication_factor: rf,
                configs,
                assignment,
            };
            let (p, rf) = controller::validate_new_topic(&new)?;
            Ok((new, p, rf))
        })();
        match refused {
            Err(refusal) => {
                r.error_code = refusal.code;
                r.error_message = Some(str_bytes(&refusal.message));
                if req.version >= 5 {
                    r.num_partitions = -1;
                    r.replication_factor = -1;
                }
                results.push(r);
            }
            Ok((new, p, rf)) => {
                if req.version >= 5 {
                    r.num_partitions = p;
                    r.replication_factor = rf;
                    r.configs = Some(effective_configs(&new.configs));
                }
                if !body.validate_only {
                    todo.push((results.len(), new));
                }
                results.push(r);
            }
        }
    }
    let (slots, topics): (Vec<usize>, Vec<NewTopic>) = todo.into_iter().unzip();
    for (slot, out) in slots
        .into_iter()
        .zip(controller::create_topics(topics).await)
    {
        match out {
            Ok(meta) if req.version >= 7 => results[slot].topic_id = meta.id,
            Ok(_) => {}
            Err(refusal) => {
                results[slot].error_code = refusal.code;
                results[slot].error_message = Some(str_bytes(&refusal.message));
                results[slot].configs = None;
            }
        }
    }
    if req.version >= 5 {
        for r in results.iter_mut().filter(|r| r.error_code != 0) {
            r.num_partitions = -1;
            r.replication_factor = -1;
        }
    }
    if req.version < 1 {
        for r in results.iter_mut() {
            r.error_message = None;
        }
    }
    let mut resp = CreateTopicsResponse::default();
    resp.topics = results;
    resp
}

fn effective_configs(overrides: &BTreeMap<String, String>) -> Vec<CreatableTopicConfigs> {
    let cfg = broker_config();
    TOPIC_CONFIGS
        .iter()
        .map(|d| {
            let mut c = CreatableTopicConfigs::default();
            c.name = str_bytes(d.name);
            let (value, source) = match overrides.get(d.name) {
                Some(v) => (v.clone(), 1),
                None => (cfg.topic_default(d), 5),
            };
            c.value = Some(str_bytes(&value));
            c.config_source = source;
            c
        })
        .collect()
}

pub async fn delete_topics(req: &Request, body: DeleteTopicsRequest) -> DeleteTopicsResponse {
    // v6+ names topics by name or id; earlier versions by name only.
    let img = image();
    let mut names: Vec<(Option<String>, uuid::Uuid)> = Vec::new();
    if req.version >= 6 {
        for t in &body.topics {
            match &t.name {
                Some(n) => names.push((Some(topic_str(n)), t.topic_id)),
                None => names.push((
                    img.topic_by_id(t.topic_id).map(|m| m.name.clone()),
                    t.topic_id,
                )),
            }
        }
    } else {
        names.extend(
            body.topic_names
                .iter()
                .map(|n| (Some(topic_str(n)), uuid::Uuid::nil())),
        );
    }
    let known: Vec<String> = names.iter().filter_map(|(n, _)| n.clone()).collect();
    let mut outcomes = controller::delete_topics(known).await.into_iter();
    let mut resp = DeleteTopicsResponse::default();
    for (name, id) in names {
        let mut r = DeletableTopicResult::default();
        r.name = name.as_deref().map(topic_name);
        if req.version >= 6 {
            r.topic_id = id;
        }
        match name {
            None => {
                r.error_code = ResponseError::UnknownTopicId.code();
                r.error_message = Some(str_bytes("This server does not host this topic ID."));
            }
            Some(_) => match outcomes.next() {
                Some(Ok(deleted_id)) if req.version >= 6 => r.topic_id = deleted_id,
                Some(Ok(_)) => {}
                Some(Err(refusal)) => {
                    r.error_code = refusal.code;
                    r.error_message = Some(str_bytes(&refusal.message));
                }
                None => r.error_code = ResponseError::UnknownServerError.code(),
            },
        }
        if req.version < 5 {
            r.error_message = None;
        }
        resp.responses.push(r);
    }
    resp
}

pub async fn create_partitions(body: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let cfg = broker_config();
    let mut resp = CreatePartitionsResponse::default();
    let mut items = Vec::new();
    let mut slots = Vec::new();
    for t in &body.topics {
        let name = topic_str(&t.name);
        let mut r = CreatePartitionsTopicResult::default();
        r.name = topic_name(&name);
        let bad_assignment =
            t.assignments.iter().flatten().any(|a| {
                a.broker_ids.len() != 1 || a.broker_ids.iter().any(|b| b.0 != cfg.node_id)
            });
        if bad_assignment {
            r.error_code = ResponseError::InvalidReplicaAssignment.code();
            r.error_message = Some(str_bytes(
                "Replica assignments must name exactly this broker",
            ));
        } else {
            slots.push(resp.results.len());
            items.push((name, t.count, body.validate_only));
        }
        resp.results.push(r);
    }
    for (slot, out) in slots
        .into_iter()
        .zip(controller::create_partitions(items).await)
    {
        if let Err(refusal) = out {
            resp.results[slot].error_code = refusal.code;
            resp.results[slot].error_message = Some(str_bytes(&refusal.message));
        }
    }
    resp
}
