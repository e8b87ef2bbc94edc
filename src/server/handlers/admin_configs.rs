//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics and brokers. Most
//! broker settings are static (altering them is refused with INVALID_REQUEST: set them at
//! start-up); the replication throttle rates (`throttle::DYNAMIC_BROKER_CONFIGS`) are
//! dynamic broker configs, per broker id or for the cluster default (resource name ""),
//! kept in the metadata log.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};

use super::str_bytes;
use crate::cluster::controller::{self, ConfigChange, Refusal};
use crate::cluster::{image, partition_manager::broker_config, throttle};
use crate::config::{ConfigKind, BROKER_SETTINGS, TOPIC_CONFIGS};
use crate::protocol::Request;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
// Kafka's ConfigSource codes.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DYNAMIC_BROKER: i8 = 2;
const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

pub fn describe(req: &Request, body: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let cfg = broker_config();
    let img = image();
    let mut resp = DescribeConfigsResponse::default();
    for res in &body.resources {
        let mut out = DescribeConfigsResult::default();
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name.clone();
        let wanted = |name: &str| {
            res.configuration_keys
                .as_ref()
                .is_none_or(|k| k.iter().any(|x| x.as_str() == name))
        };
        let name = res.resource_name.as_str();
        match res.resource_type {
            RESOURCE_TOPIC => match img.topic(name) {
                None => {
                    out.error_code = ResponseError::UnknownTopicOrPartition.code();
                    out.error_message = Some(str_bytes(&format!("Topic '{name}' does not exist.")));
                }
                Some(t) => {
                    for d in TOPIC_CONFIGS.iter().filter(|d| wanted(d.name)) {
                        let default = cfg.topic_default(d);
                        let broker_set = d.broker_key.is_some_and(|k| {
                            BROKER_SETTINGS
                                .iter()
                                .find(|s| s.key == k)
                                .is_some_and(|s| s.default != default)
                        });
                        let (value, source) = match t.configs.get(d.name) {
                            Some(v) => (v.clone(), SOURCE_TOPIC),
                            None if broker_set => (default.clone(), SOURCE_STATIC_BROKER),
                            None => (default.clone(), SOURCE_DEFAULT),
                        };
                        let mut e = entry(d.name, &value, source, d.kind, false, req.version);
                        if body.include_synonyms {
                            if let Some(v) = t.configs.get(d.name) {
                                e.synonyms.push(synonym(d.name, v, SOURCE_TOPIC));
                            }
                            if let Some(k) = d.broker_key {
                                e.synonyms.push(synonym(
                                    k,
                                    &default,
                                    if broker_set {
                                        SOURCE_STATIC_BROKER
                                    } else {
                                        SOURCE_DEFAULT
                                    },
                                ));
                            }
                        }
                        out.configs.push(e);
                    }
                }
            },
            RESOURCE_BROKER if name.is_empty() || name == cfg.node_id.to_string() => {
                let dynamic = |scope: &str, key: &str| {
                    img.broker_configs
                        .get(scope)
                        .and_then(|m| m.get(key))
                        .cloned()
                };
                for s in BROKER_SETTINGS.iter().filter(|s| wanted(s.key)) {
                    let mut value = cfg.values.get(s.key).cloned().unwrap_or_default();
                    let mut source = if value != s.default {
                        SOURCE_STATIC_BROKER
                    } else {
                        SOURCE_DEFAULT
                    };
                    let is_dynamic = throttle::DYNAMIC_BROKER_CONFIGS.contains(&s.key);
                    if is_dynamic {
                        let mine = (!name.is_empty()).then(|| dynamic(name, s.key)).flatten();
                        if let Some(v) = mine {
                            (value, source) = (v, SOURCE_DYNAMIC_BROKER);
                        } else if let Some(v) = dynamic("", s.key) {
                            (value, source) = (v, SOURCE_DYNAMIC_DEFAULT_BROKER);
                        }
                    }
                    let mut e = entry(
                        s.key,
                        &value,
                        source,
                        ConfigKind::Str,
                        !is_dynamic,
                        req.version,
                    );
                    if req.version >= 3 && body.include_documentation {
                        e.documentation = Some(str_bytes(s.doc));
                    }
                    out.configs.push(e);
                }
            }
            RESOURCE_BROKER => {
                out.error_code = ResponseError::InvalidRequest.code();
                out.error_message = Some(str_bytes(&format!(
                    "Unexpected broker id, expected {} or empty string, but received {name}",
                    cfg.node_id
                )));
            }
            other => {
                out.error_code = ResponseError::InvalidRequest.code();
                out.error_message = Some(str_bytes(&format!("Unsupported resource type {other}")));
            }
        }
        resp.results.push(out);
    }
    resp
}

fn entry(
    name: &str,
    value: &str,
    source: i8,
    kind: ConfigKind,
    read_only: bool,
    version: i16,
) -> DescribeConfigsResourceResult {
    let mut e = DescribeConfigsResourceResult::default();
    e.name = str_bytes(name);
    e.value = Some(str_bytes(value));
    e.config_source = source;
    e.read_only = read_only;
    if version >= 3 {
        e.config_type = kind.kafka_type();
    }
    e
}

fn synonym(name: &str, value: &str, source: i8) -> DescribeConfigsSynonym {
    let mut s = DescribeConfigsSynonym::default();
    s.name = str_bytes(name);
    s.value = Some(str_bytes(value));
    s.source = source;
    s
}

/// Builds an Alter/IncrementalAlterConfigs per-resource response (two
/// distinct generated types with the same fields) from an [`Outcome`].
macro_rules! resource_response {
    ($ty:ty, $outcome:expr) => {{
        let (rtype, name, r) = $outcome;
        let mut out = <$ty>::default();
        out.resource_type = rtype;
        out.resource_name = str_bytes(&name);
        if let Err(refusal) = r {
            out.error_code = refusal.code;
            out.error_message = Some(str_bytes(&refusal.message));
        }
        out
    }};
}

/// Result of one resource: (type, name, outcome).
type Outcome = (i8, String, Result<(), Refusal>);

async fn apply(
    resources: Vec<(i8, String, Result<ConfigChange, Refusal>)>,
    validate_only: bool,
) -> Vec<Outcome> {
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut items = Vec::new();
    let mut slots = Vec::new();
    let mut broker_items = Vec::new();
    let mut broker_slots = Vec::new();
    for (rtype, name, change) in resources {
        let r = match (rtype, change) {
            (_, Err(r)) => Err(r),
            (RESOURCE_TOPIC, Ok(change)) => {
                slots.push(outcomes.len());
                items.push((name.clone(), change, validate_only));
                Ok(())
            }
            (RESOURCE_BROKER, Ok(change)) => match check_broker_change(&name, &change) {
                Ok(()) => {
                    broker_slots.push(outcomes.len());
                    broker_items.push((name.clone(), change, validate_only));
                    Ok(())
                }
                Err(r) => Err(r),
            },
            (other, Ok(_)) => Err(Refusal {
                code: ResponseError::InvalidRequest.code(),
                message: format!("Unsupported resource type {other}"),
            }),
        };
        outcomes.push((rtype, name, r));
    }
    for (slot, r) in slots
        .into_iter()
        .zip(controller::alter_topic_configs(items).await)
    {
        outcomes[slot].2 = r;
    }
    if !broker_items.is_empty() {
        for (slot, r) in broker_slots
            .into_iter()
            .zip(controller::alter_broker_configs(broker_items).await)
        {
            outcomes[slot].2 = r;
        }
    }
    outcomes
}

/// Checks a change of a BROKER resource: the name is a broker id or "" (the cluster
/// default), and only the dynamic broker configs are set, with valid values.
fn check_broker_change(name: &str, change: &ConfigChange) -> Result<(), Refusal> {
    if !name.is_empty() && !name.parse::<i32>().is_ok_and(|id| id >= 0) {
        return Err(Refusal {
            code: ResponseError::InvalidRequest.code(),
            message: format!("Invalid broker id {name:?}: expected a broker id or the empty string (the cluster default)"),
        });
    }
    let keys = change.set.keys().chain(change.delete.iter());
    let static_keys: Vec<&String> = keys
        .filter(|k| !throttle::DYNAMIC_BROKER_CONFIGS.contains(&k.as_str()))
        .collect();
    if !static_keys.is_empty() {
        return Err(Refusal {
            code: ResponseError::InvalidRequest.code(),
            message: format!(
                "Cannot update these configs dynamically: {static_keys:?}. Sluice changes only {:?} at run time; set the others in the config file, environment or --set and restart",
                throttle::DYNAMIC_BROKER_CONFIGS
            ),
        });
    }
    for (k, v) in &change.set {
        throttle::validate_rate(k, v).map_err(|m| Refusal {
            code: ResponseError::InvalidConfig.code(),
            message: m,
        })?;
    }
    Ok(())
}

pub async fn alter(body: AlterConfigsRequest) -> AlterConfigsResponse {
    let resources = body
        .resources
        .iter()
        .map(|r| {
            let mut change = ConfigChange {
                replace_all: true,
                ..Default::default()
            };
            for c in &r.configs {
                if let Some(v) = &c.value {
                    change
                        .set
                        .insert(c.name.as_str().to_string(), v.as_str().to_string());
                }
            }
            (
                r.resource_type,
                r.resource_name.as_str().to_string(),
                Ok(change),
            )
        })
        .collect();
    let mut resp = AlterConfigsResponse::default();
    for outcome in apply(resources, body.validate_only).await {
        resp.responses.push(resource_response!(
            alter_configs_response::AlterConfigsResourceResponse,
            outcome
        ));
    }
    resp
}

pub async fn incremental_alter(
    body: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let img = image();
    let resources = body
        .resources
        .iter()
        .map(|r| {
            let name = r.resource_name.as_str().to_string();
            let current: BTreeMap<String, String> = if r.resource_type == RESOURCE_BROKER {
                img.broker_configs.get(&name).cloned().unwrap_or_default()
            } else {
                img.topic(&name)
                    .map(|t| t.configs.clone())
                    .unwrap_or_default()
            };
            let change = incremental_change(
                &current,
                r.configs.iter().map(|c| {
                    (
                        c.name.as_str(),
                        c.config_operation,
                        c.value.as_ref().map(|v| v.as_str()),
                    )
                }),
            );
            (r.resource_type, name, change)
        })
        .collect();
    let mut resp = IncrementalAlterConfigsResponse::default();
    for outcome in apply(resources, body.validate_only).await {
        resp.responses.push(resource_response!(
            incremental_alter_configs_response::AlterConfigsResourceResponse,
            outcome
        ));
    }
    resp
}

/// Turns SET(0)/DELETE(1)/APPEND(2)/SUBTRACT(3) operations into a change.
fn incremental_change<'a>(
    current: &BTreeMap<String, String>,
    ops: impl Iterator<Item = (&'a str, i8, Option<&'a str>)>,
) -> Result<ConfigChange, Refusal> {
    let invalid = |m: String| Refusal {
        code: ResponseError::InvalidConfig.code(),
        message: m,
    };
    let cfg = broker_config();
    let mut change = ConfigChange::default();
    for (name, op, value) in ops {
        let list_now = || -> Vec<String> {
            let v = change
                .set
                .get(name)
                .cloned()
                .or_else(|| current.get(name).cloned())
                .or_else(|| crate::config::topic_config_def(name).map(|d| cfg.topic_default(d)));
            v.unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let is_list = matches!(
            crate::config::topic_config_def(name).map(|d| d.kind),
            Some(ConfigKind::List(_))
        );
        match op {
            0 => {
                let v =
                    value.ok_or_else(|| invalid(format!("Null value not supported for {name}")))?;
                change.set.insert(name.to_string(), v.to_string());
            }
            1 => change.delete.push(name.to_string()),
            2 | 3 if !is_list => {
                return Err(invalid(format!(
                    "Config value append/subtract is not allowed for config key {name}"
                )))
            }
            2 => {
                let mut l = list_now();
                for v in value
                    .unwrap_or("")
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                {
                    if !l.iter().any(|x| x == v) {
                        l.push(v.to_string());
                    }
                }
                change.set.insert(name.to_string(), l.join(","));
            }
            3 => {
                let drop: Vec<&str> = value.unwrap_or("").split(',').map(str::trim).collect();
                let l: Vec<String> = list_now()
                    .into_iter()
                    .filter(|x| !drop.contains(&x.as_str()))
                    .collect();
                change.set.insert(name.to_string(), l.join(","));
            }
            other => {
                return Err(invalid(format!(
                    "Unknown config operation {other} for {name}"
                )))
            }
        }
    }
    Ok(change)
}
