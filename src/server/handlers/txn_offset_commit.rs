//! TxnOffsetCommit: refused until transactions exist. Every partition gets
//! TRANSACTIONAL_ID_AUTHORIZATION_FAILED, the answer InitProducerId already gives a
//! transactional producer, so no offset is ever committed outside a transaction that skein
//! could not have begun.

use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use kafka_protocol::ResponseError;

pub fn handle(request: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse {
    let refused = ResponseError::TransactionalIdAuthorizationFailed.code();
    TxnOffsetCommitResponse::default().with_topics(
        request
            .topics
            .into_iter()
            .map(|t| {
                TxnOffsetCommitResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                TxnOffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(refused)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}
