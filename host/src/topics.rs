//! `sluice topics ensure`: the Kafka topics a config reads and writes — the source's
//! topics, each Kafka sink's topic, the plugin state topic — created when missing and
//! checked when present, with what does not fit the config reported as drift: a state topic
//! that is not compacted (old snapshots would be deleted by retention, or kept forever), a
//! sink topic whose `max.message.bytes` is below what the sink sends (the broker would
//! refuse its largest records).

use crate::config::Config;
use crate::kafka_security::{KafkaSecurity, TokenContext};
use crate::sink::SinkConfig;
use crate::source::SourceConfig;
pub use crate::source::kafka_state::{partitions_of, state_topic_settings};
use rdkafka::ClientConfig;
use rdkafka::admin::{
    AdminClient, AdminOptions, NewTopic, OwnedResourceSpecifier, ResourceSpecifier,
    TopicReplication,
};
use std::collections::BTreeMap;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

/// What a topic is for, which decides how it is made and checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Purpose {
    /// Read by the source.
    Source,
    /// Written by a Kafka sink whose producer sends messages of up to this many bytes.
    Sink {
        sink: String,
        max_message_bytes: usize,
    },
    /// The plugin state topic: compacted, one partition per source partition.
    State { max_message_bytes: usize },
}

/// A topic the config needs, and the cluster it lives on.
#[derive(Debug, Clone)]
pub struct Need {
    pub topic: String,
    pub purpose: Purpose,
    pub brokers: String,
    /// The TLS and SASL settings of the part using it.
    pub security: KafkaSecurity,
    /// The client settings of the part using it.
    pub options: BTreeMap<String, String>,
}

/// What `ensure` found or did for one topic.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Present {
        partitions: usize,
    },
    Created {
        partitions: i32,
    },
    /// Missing, and `--check` forbade creating it.
    Missing,
    /// Present, but set up against what the config needs: why, and what to do.
    Drift(String),
}

#[derive(Debug, thiserror::Error)]
pub enum TopicsError {
    #[error(
        "Kafka at {brokers}: {message}. Check the brokers and the client settings (`options`)."
    )]
    Kafka { brokers: String, message: String },
}

/// The topics `config` reads and writes.
pub fn needs(config: &Config) -> Vec<Need> {
    let mut needs = Vec::new();
    if let SourceConfig::Kafka(source) = &config.source {
        for topic in &source.topics {
            needs.push(Need {
                topic: topic.clone(),
                purpose: Purpose::Source,
                brokers: source.brokers.clone(),
                security: (*source.security).clone(),
                options: source.options.clone(),
            });
        }
        if source.plugin_state && !config.plugins.is_empty() {
            let per_stage = (config.pipeline.max_state_mb as usize) << 20;
            needs.push(Need {
                topic: source.state_topic_name(),
                purpose: Purpose::State {
                    max_message_bytes: crate::source::kafka_state::message_max_bytes(
                        per_stage.saturating_mul(config.plugins.len()),
                    ),
                },
                brokers: source.brokers.clone(),
                security: (*source.security).clone(),
                options: source.options.clone(),
            });
        }
    }
    for (name, sink) in &config.sinks {
        if let SinkConfig::Kafka(sink) = sink {
            needs.push(Need {
                topic: sink.topic.clone(),
                purpose: Purpose::Sink {
                    sink: name.clone(),
                    max_message_bytes: sink.message_max_bytes(),
                },
                brokers: sink.brokers.clone(),
                security: (*sink.security).clone(),
                options: sink.options.clone(),
            });
        }
    }
    needs
}

/// Create what is missing (unless `check_only`) and check what is there. New topics get
/// `partitions` (the broker's default when `None`); a state topic gets as many as the
/// widest source topic.
pub async fn ensure(
    needs: &[Need],
    check_only: bool,
    partitions: Option<i32>,
) -> Result<Vec<(Need, Outcome)>, TopicsError> {
    let mut source_partitions = 0;
    let mut results = Vec::new();
    for need in needs {
        let admin = admin(need)?;
        let present = partition_count(&admin, need)?;
        if need.purpose == Purpose::Source {
            source_partitions = source_partitions.max(present.unwrap_or(0) as i32);
        }
        let outcome = match present {
            Some(count) => match drift(&admin, need).await? {
                Some(why) => Outcome::Drift(why),
                None => Outcome::Present { partitions: count },
            },
            None if check_only => Outcome::Missing,
            None => {
                let count = match need.purpose {
                    Purpose::State { .. } if source_partitions > 0 => source_partitions,
                    _ => partitions.unwrap_or(-1),
                };
                create(&admin, need, count).await?;
                Outcome::Created { partitions: count }
            }
        };
        results.push((need.clone(), outcome));
    }
    Ok(results)
}

/// The topic settings a topic for `purpose` is created with.
pub fn settings(purpose: &Purpose) -> Vec<(&'static str, String)> {
    match purpose {
        Purpose::Source => Vec::new(),
        Purpose::Sink {
            max_message_bytes, ..
        } => vec![("max.message.bytes", max_message_bytes.to_string())],
        Purpose::State { max_message_bytes } => state_topic_settings(*max_message_bytes),
    }
}

fn client_config(need: &Need) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &need.brokers);
    need.security.apply(&mut c);
    for (key, value) in &need.options {
        c.set(key, value);
    }
    c
}

fn admin(need: &Need) -> Result<AdminClient<TokenContext>, TopicsError> {
    let c = client_config(need);
    let oauth = (need.security.oauth(&part(need))).map_err(|e| kafka_error(need, e))?;
    let admin: AdminClient<TokenContext> = c
        .create_with_context(TokenContext::new(oauth.clone()))
        .map_err(|e| kafka_error(need, e))?;
    oauth
        .seed(admin.inner())
        .map_err(|e| kafka_error(need, e))?;
    Ok(admin)
}

/// The part of the config `need` comes from: `source` or `sinks.<name>`.
fn part(need: &Need) -> String {
    match &need.purpose {
        Purpose::Sink { sink, .. } => format!("sinks.{sink}"),
        _ => "source".to_owned(),
    }
}

fn kafka_error(need: &Need, e: impl std::fmt::Display) -> TopicsError {
    TopicsError::Kafka {
        brokers: need.brokers.clone(),
        message: format!("topic `{}`: {e}", need.topic),
    }
}

fn partition_count(
    admin: &AdminClient<TokenContext>,
    need: &Need,
) -> Result<Option<usize>, TopicsError> {
    partitions_of(admin, &need.topic).map_err(|e| {
        let oauth = admin.inner().context().oauth();
        match crate::kafka_security::refusal(&client_config(need), oauth) {
            Some(reason) => kafka_error(
                need,
                format!(
                    "the brokers refused to authenticate ({reason}); {}",
                    crate::kafka_security::authentication_hint(&part(need), &need.security)
                ),
            ),
            None => kafka_error(need, e),
        }
    })
}

async fn create(
    admin: &AdminClient<TokenContext>,
    need: &Need,
    partitions: i32,
) -> Result<(), TopicsError> {
    let settings = settings(&need.purpose);
    let mut topic = NewTopic::new(&need.topic, partitions, TopicReplication::Fixed(-1));
    for (key, value) in &settings {
        topic = topic.set(key, value);
    }
    let results = admin
        .create_topics(
            [&topic],
            &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
        )
        .await
        .map_err(|e| kafka_error(need, e))?;
    for result in results {
        match result {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(kafka_error(need, code)),
        }
    }
    Ok(())
}

/// Why a present topic does not fit `need`, if it does not.
async fn drift(
    admin: &AdminClient<TokenContext>,
    need: &Need,
) -> Result<Option<String>, TopicsError> {
    let resources = admin
        .describe_configs(
            [&ResourceSpecifier::Topic(&need.topic)],
            &AdminOptions::new(),
        )
        .await
        .map_err(|e| kafka_error(need, e))?;
    let mut settings: BTreeMap<String, String> = BTreeMap::new();
    for resource in resources.into_iter().flatten() {
        if resource.specifier != OwnedResourceSpecifier::Topic(need.topic.clone()) {
            continue;
        }
        for entry in resource.entries {
            if let Some(value) = entry.value {
                settings.insert(entry.name, value);
            }
        }
    }
    let max_bytes = |key: &str| settings.get(key).and_then(|v| v.parse::<usize>().ok());
    Ok(match &need.purpose {
        Purpose::Source => None,
        Purpose::Sink {
            sink,
            max_message_bytes,
        } => match max_bytes("max.message.bytes") {
            Some(topic) if topic < *max_message_bytes => Some(format!(
                "max.message.bytes is {topic}, below the {max_message_bytes} bytes sink `{sink}` sends: the broker refuses its largest records. Raise the topic's max.message.bytes to {max_message_bytes}, or lower the sink's options.\"message.max.bytes\""
            )),
            _ => None,
        },
        Purpose::State { max_message_bytes } => {
            let policy = settings.get("cleanup.policy").cloned().unwrap_or_default();
            if !policy.split(',').any(|p| p.trim() == "compact") {
                Some(format!(
                    "cleanup.policy is `{policy}`, not compact: retention would delete the snapshots of quiet partitions (their state starts empty after a restart). Set cleanup.policy=compact"
                ))
            } else {
                match max_bytes("max.message.bytes") {
                    Some(topic) if topic < *max_message_bytes => Some(format!(
                        "max.message.bytes is {topic}, below the largest snapshot the config allows ({max_message_bytes} bytes): raise it, or lower pipeline.max_state_mb"
                    )),
                    _ => None,
                }
            }
        }
    })
}
