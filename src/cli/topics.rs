//! `skein topics create|list|describe|delete --bootstrap HOST:PORT[,HOST:PORT...]`.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::client::cluster::connect_bootstrap;

#[derive(Args)]
pub struct TopicsArgs {
    /// Brokers to bootstrap from, HOST:PORT[,HOST:PORT...]: the first that answers is used.
    #[arg(long, default_value = "127.0.0.1:9092", global = true)]
    bootstrap: String,
    #[command(subcommand)]
    command: TopicsCommand,
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// Create a topic.
    Create {
        /// Name of the topic to create.
        #[arg(long)]
        topic: String,
        /// Number of partitions (-1 = the broker's num.partitions).
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        partitions: i32,
        /// Replicas per partition (-1 = the broker's default.replication.factor).
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        replication_factor: i16,
        /// A topic setting, NAME=VALUE (e.g. retention.ms=60000); repeatable.
        #[arg(long = "config", value_name = "NAME=VALUE")]
        configs: Vec<String>,
    },
    /// List topics.
    List,
    /// Show a topic's partitions, leaders, replicas, ISRs (under-replicated ones marked) and settings.
    Describe {
        /// Name of the topic to describe.
        #[arg(long)]
        topic: String,
    },
    /// Delete a topic and its data.
    Delete {
        /// Name of the topic to delete.
        #[arg(long)]
        topic: String,
    },
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_owned()))
}

fn check(code: i16, message: Option<&StrBytes>, what: &str) -> anyhow::Result<()> {
    if let Some(error) = ResponseError::try_from_code(code) {
        match message {
            Some(m) => bail!("{what}: {error:?}: {m}"),
            None => bail!("{what}: {error:?}"),
        }
    }
    Ok(())
}

pub fn run(args: TopicsArgs) -> anyhow::Result<()> {
    // A command-line tool piped into `head` should stop quietly, not panic on EPIPE.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut conn = connect_bootstrap(&args.bootstrap).await?;
        match args.command {
            TopicsCommand::Create {
                topic,
                partitions,
                replication_factor,
                configs,
            } => {
                let mut parsed = BTreeMap::new();
                for c in &configs {
                    let (k, v) = c
                        .split_once('=')
                        .with_context(|| format!("--config {c}: expected NAME=VALUE"))?;
                    parsed.insert(k.to_owned(), v.to_owned());
                }
                let request = CreateTopicsRequest::default()
                    .with_timeout_ms(30_000)
                    .with_topics(vec![CreatableTopic::default()
                        .with_name(name(&topic))
                        .with_num_partitions(partitions)
                        .with_replication_factor(replication_factor)
                        .with_configs(
                            parsed
                                .into_iter()
                                .map(|(k, v)| {
                                    CreatableTopicConfig::default()
                                        .with_name(StrBytes::from_string(k))
                                        .with_value(Some(StrBytes::from_string(v)))
                                })
                                .collect(),
                        )]);
                let response = conn.send(request).await?;
                for t in &response.topics {
                    check(
                        t.error_code,
                        t.error_message.as_ref(),
                        &format!("creating topic '{}'", t.name.0),
                    )?;
                    println!(
                        "created topic '{}' with {} partition(s)",
                        t.name.0, t.num_partitions
                    );
                }
            }
            TopicsCommand::List => {
                let response = conn
                    .send(MetadataRequest::default().with_topics(None))
                    .await?;
                let mut names: Vec<String> = response
                    .topics
                    .iter()
                    .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
                    .collect();
                names.sort();
                for n in names {
                    println!("{n}");
                }
            }
            TopicsCommand::Describe { topic } => {
                let request = MetadataRequest::default()
                    .with_topics(Some(vec![
                        MetadataRequestTopic::default().with_name(Some(name(&topic)))
                    ]))
                    .with_allow_auto_topic_creation(false);
                let response = conn.send(request).await?;
                for t in &response.topics {
                    check(t.error_code, None, &format!("describing topic '{topic}'"))?;
                    println!(
                        "topic {topic}  id {}  partitions {}",
                        t.topic_id,
                        t.partitions.len()
                    );
                    let mut under_replicated = 0usize;
                    for p in &t.partitions {
                        let ids = |v: &[kafka_protocol::messages::BrokerId]| {
                            v.iter()
                                .map(|b| b.0.to_string())
                                .collect::<Vec<_>>()
                                .join(",")
                        };
                        // Kafka's definition: fewer in-sync replicas than assigned ones.
                        let under = p.isr_nodes.len() < p.replica_nodes.len();
                        under_replicated += usize::from(under);
                        println!(
                            "  partition {:>3}  leader {:>3}  epoch {:>3}  replicas [{}]  isr [{}]{}",
                            p.partition_index,
                            p.leader_id.0,
                            p.leader_epoch,
                            ids(&p.replica_nodes),
                            ids(&p.isr_nodes),
                            if under { "  UNDER-REPLICATED" } else { "" }
                        );
                    }
                    println!("  under-replicated partitions: {under_replicated}");
                }
                let request = DescribeConfigsRequest::default().with_resources(vec![
                    DescribeConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(StrBytes::from_string(topic.clone())),
                ]);
                let response = conn.send(request).await?;
                for r in &response.results {
                    check(
                        r.error_code,
                        r.error_message.as_ref(),
                        &format!("describing configs of '{topic}'"),
                    )?;
                    println!("configs:");
                    for c in &r.configs {
                        let source = if c.config_source == 1 {
                            "  (topic override)"
                        } else {
                            ""
                        };
                        println!(
                            "  {} = {}{source}",
                            c.name,
                            c.value.as_ref().map(|v| v.as_str()).unwrap_or("")
                        );
                    }
                }
            }
            TopicsCommand::Delete { topic } => {
                let version = conn.version_of::<DeleteTopicsRequest>()?;
                let request = if version >= 6 {
                    DeleteTopicsRequest::default().with_topics(vec![
                        DeleteTopicState::default().with_name(Some(name(&topic)))
                    ])
                } else {
                    DeleteTopicsRequest::default().with_topic_names(vec![name(&topic)])
                }
                .with_timeout_ms(30_000);
                let response = conn.send(request).await?;
                for r in &response.responses {
                    check(
                        r.error_code,
                        r.error_message.as_ref(),
                        &format!("deleting topic '{topic}'"),
                    )?;
                }
                println!("deleted topic '{topic}'");
            }
        }
        Ok(())
    })
}
