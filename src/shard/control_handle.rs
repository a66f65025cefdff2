//! How a shard reaches the control thread (`cluster::control`), the only place that talks to
//! ZooKeeper: a [`ControlRequest`] over a bounded flume channel, answered on a oneshot, so a
//! slow or absent ensemble never blocks an executor. Defined here, on the asking side, so the
//! shards do not depend on the control plane that serves them.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::channel::oneshot;
use kafka_protocol::messages::{
    ControlledShutdownRequest, ControlledShutdownResponse, LeaderAndIsrRequest,
    LeaderAndIsrResponse, StopReplicaRequest, StopReplicaResponse, UpdateMetadataRequest,
    UpdateMetadataResponse,
};
use kafka_protocol::ResponseError;

/// Control requests waiting for the control thread; a shard asking beyond it waits.
pub const CONTROL_QUEUE_DEPTH: usize = 1024;

/// The longest a shard waits for the control thread's answer (Kafka clients' default
/// request.timeout.ms is 30 s).
pub const CONTROL_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A topic to create, as CreateTopics or auto-creation asks for it.
#[derive(Debug, Clone)]
pub struct CreateTopicSpec {
    pub name: String,
    /// -1 = broker default (`num.partitions`).
    pub num_partitions: i32,
    /// -1 = broker default (`default.replication.factor`).
    pub replication_factor: i16,
    /// Explicit assignment (partition -> replicas); empty = let the broker assign.
    pub assignments: BTreeMap<i32, Vec<i32>>,
    pub configs: BTreeMap<String, String>,
    pub validate_only: bool,
    /// A topic the broker makes for itself (`__consumer_offsets`): its `cleanup.policy=compact`
    /// is taken (the group coordinator keeps it bounded), which a client's request is not.
    pub internal: bool,
}

/// An admin failure with the Kafka error code a client should see.
#[derive(Debug, Clone)]
pub struct AdminError {
    pub code: ResponseError,
    pub message: String,
}

impl AdminError {
    pub fn new(code: ResponseError, message: impl Into<String>) -> Self {
        AdminError {
            code,
            message: message.into(),
        }
    }
}

pub enum ControlRequest {
    CreateTopic {
        spec: CreateTopicSpec,
        reply: oneshot::Sender<Result<(), AdminError>>,
    },
    DeleteTopic {
        name: String,
        reply: oneshot::Sender<Result<(), AdminError>>,
    },
    AllocateProducerId {
        reply: oneshot::Sender<Result<i64, AdminError>>,
    },
    /// A leader's new ISR for a partition, written to its state znode only if the znode still
    /// names this broker leader in `leader_epoch` (Kafka's ZooKeeper-mode ISR update).
    AlterIsr {
        tp: crate::metadata::TopicPartition,
        leader_epoch: i32,
        isr: Vec<i32>,
        reply: oneshot::Sender<Result<(), AdminError>>,
    },
    /// A request of the controller's (or, at the controller, a broker's ControlledShutdown),
    /// arrived on a shard's listener.
    InterBroker {
        request: InterBroker,
        reply: oneshot::Sender<Result<InterBrokerAnswer, AdminError>>,
    },
    /// Before a clean stop: ask the controller to move this broker's leaderships away (Kafka's
    /// controlled shutdown). Answered once they moved, or the retries ran out.
    ControlledShutdown { reply: std::sync::mpsc::Sender<()> },
    /// Clean shutdown: give up the registration and the controllership now instead of making the
    /// cluster wait a session timeout for them.
    Shutdown { reply: std::sync::mpsc::Sender<()> },
}

/// Kafka's controller-to-broker requests (and ControlledShutdown, broker-to-controller).
pub enum InterBroker {
    LeaderAndIsr(LeaderAndIsrRequest),
    UpdateMetadata(UpdateMetadataRequest),
    StopReplica(StopReplicaRequest),
    ControlledShutdown(ControlledShutdownRequest),
}

pub enum InterBrokerAnswer {
    LeaderAndIsr(LeaderAndIsrResponse),
    UpdateMetadata(UpdateMetadataResponse),
    StopReplica(StopReplicaResponse),
    ControlledShutdown(ControlledShutdownResponse),
}

/// What a shard holds to reach the control thread.
#[derive(Clone)]
pub struct ControlHandle {
    tx: flume::Sender<ControlRequest>,
}

impl ControlHandle {
    /// A handle and the receiving end the control thread serves, with room for
    /// [`CONTROL_QUEUE_DEPTH`] requests.
    pub fn channel() -> (ControlHandle, flume::Receiver<ControlRequest>) {
        let (tx, rx) = flume::bounded(CONTROL_QUEUE_DEPTH);
        (ControlHandle { tx }, rx)
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, AdminError>>) -> ControlRequest,
    ) -> Result<T, AdminError> {
        let (reply, answer) = oneshot::channel();
        let gone = || {
            AdminError::new(
                ResponseError::BrokerNotAvailable,
                "the control thread has stopped",
            )
        };
        let asked = async {
            self.tx.send_async(make(reply)).await.map_err(|_| gone())?;
            answer.await.map_err(|_| gone())?
        };
        // Bounded: while ZooKeeper is away the control thread cannot answer, and a request
        // waiting here holds its budget and its connection's pipeline.
        futures::select! {
            result = futures::FutureExt::fuse(asked) => result,
            _ = futures::FutureExt::fuse(glommio::timer::sleep(CONTROL_REQUEST_TIMEOUT)) => {
                Err(AdminError::new(
                    ResponseError::RequestTimedOut,
                    format!("the control thread did not answer within {CONTROL_REQUEST_TIMEOUT:?}"),
                ))
            }
        }
    }

    pub async fn create_topic(&self, spec: CreateTopicSpec) -> Result<(), AdminError> {
        self.ask(|reply| ControlRequest::CreateTopic { spec, reply })
            .await
    }

    pub async fn delete_topic(&self, name: String) -> Result<(), AdminError> {
        self.ask(|reply| ControlRequest::DeleteTopic { name, reply })
            .await
    }

    pub async fn allocate_producer_id(&self) -> Result<i64, AdminError> {
        self.ask(|reply| ControlRequest::AllocateProducerId { reply })
            .await
    }

    pub async fn alter_isr(
        &self,
        tp: crate::metadata::TopicPartition,
        leader_epoch: i32,
        isr: Vec<i32>,
    ) -> Result<(), AdminError> {
        self.ask(|reply| ControlRequest::AlterIsr {
            tp,
            leader_epoch,
            isr,
            reply,
        })
        .await
    }

    pub async fn inter_broker(
        &self,
        request: InterBroker,
    ) -> Result<InterBrokerAnswer, AdminError> {
        self.ask(|reply| ControlRequest::InterBroker { request, reply })
            .await
    }

    /// Blocking: called from the main thread on a stop signal, before the shards close their
    /// partitions (leaders must keep serving while their leaderships move).
    pub fn controlled_shutdown(&self, timeout: Duration) {
        let (reply, done) = std::sync::mpsc::channel();
        let request = ControlRequest::ControlledShutdown { reply };
        if self.tx.send_timeout(request, timeout).is_ok() {
            let _ = done.recv_timeout(timeout);
        }
    }

    /// Blocking: called from the main thread once the shards have closed their partitions.
    pub fn shut_down(&self, timeout: Duration) {
        let (reply, done) = std::sync::mpsc::channel();
        let request = ControlRequest::Shutdown { reply };
        if self.tx.send_timeout(request, timeout).is_ok() {
            let _ = done.recv_timeout(timeout);
        }
    }
}
