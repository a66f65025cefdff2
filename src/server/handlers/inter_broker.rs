//! LeaderAndIsr, UpdateMetadata, StopReplica (the controller's requests to every broker) and
//! ControlledShutdown (a stopping broker's request to the controller): handed whole to the
//! control thread, which checks the controller epoch, applies them and answers.

use std::rc::Rc;

use kafka_protocol::messages::{
    ControlledShutdownResponse, LeaderAndIsrResponse, StopReplicaResponse, UpdateMetadataResponse,
};

use crate::shard::control_handle::{InterBroker, InterBrokerAnswer};
use crate::shard::Shard;

/// The control thread's answer, or the request's own error code when it could not answer (its
/// queue full, or the wait bounded by the control handle ran out).
pub async fn handle(shard: &Rc<Shard>, request: InterBroker) -> InterBrokerAnswer {
    let asked = match &request {
        InterBroker::LeaderAndIsr(_) => 4,
        InterBroker::StopReplica(_) => 5,
        InterBroker::UpdateMetadata(_) => 6,
        InterBroker::ControlledShutdown(_) => 7,
    };
    match shard.control.inter_broker(request).await {
        Ok(answer) => answer,
        Err(e) => {
            let code = e.code.code();
            match asked {
                4 => InterBrokerAnswer::LeaderAndIsr(
                    LeaderAndIsrResponse::default().with_error_code(code),
                ),
                5 => InterBrokerAnswer::StopReplica(
                    StopReplicaResponse::default().with_error_code(code),
                ),
                6 => InterBrokerAnswer::UpdateMetadata(
                    UpdateMetadataResponse::default().with_error_code(code),
                ),
                _ => InterBrokerAnswer::ControlledShutdown(
                    ControlledShutdownResponse::default().with_error_code(code),
                ),
            }
        }
    }
}
