//! Consumer groups as an administrator sees them, from the client side: which broker coordinates a
//! group (FindCoordinator), the groups every broker knows (ListGroups), a group's state and
//! members (DescribeGroups), its committed offsets (OffsetFetch, OffsetCommit) and deleting it
//! (DeleteGroups). `skein groups` is built on this; one request at a time on the tool's tokio
//! runtime.
//!
//! A coordinator that is still loading its groups, has moved, or is not known yet answers
//! COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR or COORDINATOR_NOT_AVAILABLE. Those are retried
//! (looking the coordinator up again where it may have moved) a bounded number of times with a
//! short backoff, as Kafka's Admin client does, and then reported as an error naming the group.
//!
//! [`GroupMember`] is the other side: a consumer in a group (JoinGroup, SyncGroup, Heartbeat,
//! OffsetFetch and OffsetCommit with its generation, LeaveGroup), with the consumer protocol's
//! subscription and assignment encodings and Kafka's range assignor ([`range_assign`]).
//! `skein bench consume --group` is built on it.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    ApiKey, ConsumerProtocolAssignment, ConsumerProtocolSubscription, DeleteGroupsRequest,
    DescribeGroupsRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest,
    LeaveGroupRequest, ListGroupsRequest, MetadataRequest, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, Message, Request, StrBytes};
use kafka_protocol::ResponseError;

use super::cluster::{self, TopicLayout};
use super::Connection;

mod admin;
mod member;

pub use admin::*;
pub use member::*;

/// How many times a request meets a loading, moved or unknown coordinator before we give up.
pub const COORDINATOR_ATTEMPTS: u32 = 20;
/// The wait between two of those attempts.
pub const COORDINATOR_BACKOFF: Duration = Duration::from_millis(250);

/// FindCoordinator key type of a consumer group (1 is a transactional id).
const KEY_TYPE_GROUP: i8 = 0;

/// The protocol type of groups whose members are Kafka consumers, and whose assignments are
/// therefore `ConsumerProtocolAssignment`s.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// Kafka's name of an error code, as its tools print it: `NOT_COORDINATOR`, `NON_EMPTY_GROUP`.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".to_owned(),
        Some(ResponseError::Unknown(code)) => format!("UNKNOWN_ERROR_CODE({code})"),
        // kafka-protocol names its variants after Kafka's, in CamelCase.
        Some(error) => screaming_snake_case(&error.to_string()),
    }
}

fn screaming_snake_case(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    let mut previous: Option<char> = None;
    for c in camel.chars() {
        if c.is_ascii_uppercase()
            && previous.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit())
        {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
        previous = Some(c);
    }
    out
}

/// An error the broker answered, with Kafka's name for it.
#[derive(Debug, thiserror::Error)]
pub enum GroupsError {
    #[error("{what}: {}{}", error_name(*code), message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Broker {
        what: String,
        code: i16,
        message: Option<String>,
    },
    #[error("{what}: still {} after {attempts} attempts {backoff:?} apart", error_name(*code))]
    CoordinatorNotReady {
        what: String,
        code: i16,
        attempts: u32,
        backoff: Duration,
    },
}

fn broker_error(what: impl Into<String>, code: i16, message: Option<&StrBytes>) -> anyhow::Error {
    GroupsError::Broker {
        what: what.into(),
        code,
        message: message.map(|m| m.to_string()),
    }
    .into()
}

/// What to do about an error code from a coordinator.
enum Retry {
    /// Not a coordinator problem (or no error): the answer stands.
    No,
    /// The coordinator is loading: ask it again.
    Same,
    /// The coordinator moved or is unknown: look it up again.
    Rediscover,
}

fn retry_of(code: i16) -> Retry {
    match ResponseError::try_from_code(code) {
        Some(ResponseError::CoordinatorLoadInProgress) => Retry::Same,
        Some(ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable) => {
            Retry::Rediscover
        }
        _ => Retry::No,
    }
}

/// The version of `R` to send on `conn`; the error names the API and the broker.
fn version_of<R: Request>(conn: &Connection) -> anyhow::Result<i16> {
    conn.version_of::<R>()
        .with_context(|| match ApiKey::try_from(R::KEY) {
            Ok(api) => format!("{api:?} on {}", conn.addr()),
            Err(_) => format!("API key {} on {}", R::KEY, conn.addr()),
        })
}

/// The broker that coordinates a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinator {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

impl Coordinator {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// One group as ListGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    /// Returned from ListGroups v4 on.
    pub state: Option<String>,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub group_id: String,
    /// `Dead` for a group the coordinator does not know.
    pub state: String,
    pub protocol_type: String,
    /// The assignor a consumer group chose (`range`, `cooperative-sticky`, ...).
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

impl GroupDescription {
    /// Kafka answers a group it does not know as `Dead` (DescribeGroups v6 and later may say
    /// GROUP_ID_NOT_FOUND instead, which [`GroupAdmin::describe_group`] maps to `Dead`).
    pub fn exists(&self) -> bool {
        self.state != "Dead"
    }

    /// Whether offsets may be reset or the group deleted: nobody is in it.
    pub fn is_inactive(&self) -> bool {
        self.state == "Empty" || self.state == "Dead"
    }
}

#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub assignment: Assignment,
}

/// A member's assignment, decoded when the group is a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    /// Topic and partition pairs, sorted.
    Partitions(Vec<(String, i32)>),
    /// Not a consumer group: the assignment's bytes mean something only to its clients.
    Opaque { bytes: usize },
    /// A consumer group's assignment that does not decode.
    Malformed(String),
}

/// Decodes a consumer group member's assignment: a version (int16) and a
/// `ConsumerProtocolAssignment` of that version. An empty buffer is an empty assignment (a
/// member that has not synced yet).
pub fn decode_consumer_assignment(bytes: &Bytes) -> anyhow::Result<Vec<(String, i32)>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut buf = bytes.clone();
    if buf.remaining() < 2 {
        bail!("{} byte(s), too short for a version", buf.remaining());
    }
    let version = buf.get_i16();
    if version < 0 {
        bail!("version {version}");
    }
    // Newer versions only add fields at the end, so Kafka reads them as the newest it knows.
    let version = version.min(ConsumerProtocolAssignment::VERSIONS.max);
    let assignment = ConsumerProtocolAssignment::decode(&mut buf, version)?;
    let mut out: Vec<(String, i32)> = assignment
        .assigned_partitions
        .iter()
        .flat_map(|t| t.partitions.iter().map(|&p| (t.topic.0.to_string(), p)))
        .collect();
    out.sort();
    Ok(out)
}

/// `(topic, partition)`, ordered by topic then partition.
pub type TopicPartition = (String, i32);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use bytes::BufMut;
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
    use kafka_protocol::messages::describe_groups_response::DescribedGroup;
    use kafka_protocol::messages::{
        ApiVersionsResponse, BrokerId, DescribeGroupsResponse, FindCoordinatorResponse,
        RequestHeader, ResponseHeader,
    };
    use kafka_protocol::protocol::Encodable;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A broker that answers ApiVersions, FindCoordinator (naming itself) and DescribeGroups
    /// with error codes from a script, and counts what it is asked.
    struct FakeCoordinator {
        addr: String,
        find_calls: Arc<AtomicUsize>,
        describe_calls: Arc<AtomicUsize>,
    }

    type Script = Arc<dyn Fn(usize) -> i16 + Send + Sync>;

    impl FakeCoordinator {
        /// `find_code(n)` and `describe_code(n)` are the codes of the n-th (from 0) answers.
        async fn start(
            find_code: impl Fn(usize) -> i16 + Send + Sync + 'static,
            describe_code: impl Fn(usize) -> i16 + Send + Sync + 'static,
        ) -> FakeCoordinator {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let port = listener.local_addr().expect("local addr").port();
            let fake = FakeCoordinator {
                addr: format!("127.0.0.1:{port}"),
                find_calls: Arc::default(),
                describe_calls: Arc::default(),
            };
            let (find_calls, describe_calls) =
                (fake.find_calls.clone(), fake.describe_calls.clone());
            let (find_code, describe_code): (Script, Script) =
                (Arc::new(find_code), Arc::new(describe_code));
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (find_calls, describe_calls) = (find_calls.clone(), describe_calls.clone());
                    let (find_code, describe_code) = (find_code.clone(), describe_code.clone());
                    tokio::spawn(async move {
                        let _ = serve(
                            stream,
                            port,
                            (find_calls, find_code),
                            (describe_calls, describe_code),
                        )
                        .await;
                    });
                }
            });
            fake
        }
    }

    async fn serve(
        mut stream: TcpStream,
        port: u16,
        (find_calls, find_code): (Arc<AtomicUsize>, Script),
        (describe_calls, describe_code): (Arc<AtomicUsize>, Script),
    ) -> anyhow::Result<()> {
        loop {
            let len = stream.read_i32().await?;
            let mut body = vec![0; len as usize];
            stream.read_exact(&mut body).await?;
            let mut body = Bytes::from(body);
            let api = ApiKey::try_from(i16::from_be_bytes([body[0], body[1]]))
                .map_err(|_| anyhow!("unknown api key"))?;
            let version = i16::from_be_bytes([body[2], body[3]]);
            let header = RequestHeader::decode(&mut body, api.request_header_version(version))?;
            let mut out = bytes::BytesMut::new();
            ResponseHeader::default()
                .with_correlation_id(header.correlation_id)
                .encode(&mut out, api.response_header_version(version))?;
            match api {
                ApiKey::ApiVersions => {
                    let served = [
                        (ApiKey::ApiVersions, 3),
                        (ApiKey::FindCoordinator, 3),
                        (ApiKey::DescribeGroups, 5),
                    ];
                    ApiVersionsResponse::default()
                        .with_api_keys(
                            served
                                .into_iter()
                                .map(|(key, max)| {
                                    ApiVersion::default()
                                        .with_api_key(key as i16)
                                        .with_max_version(max)
                                })
                                .collect(),
                        )
                        .encode(&mut out, version)?
                }
                ApiKey::FindCoordinator => {
                    let n = find_calls.fetch_add(1, Ordering::SeqCst);
                    FindCoordinatorResponse::default()
                        .with_error_code(find_code(n))
                        .with_node_id(BrokerId(1))
                        .with_host(StrBytes::from_static_str("127.0.0.1"))
                        .with_port(port.into())
                        .encode(&mut out, version)?
                }
                ApiKey::DescribeGroups => {
                    let n = describe_calls.fetch_add(1, Ordering::SeqCst);
                    let request = DescribeGroupsRequest::decode(&mut body, version)?;
                    DescribeGroupsResponse::default()
                        .with_groups(
                            request
                                .groups
                                .into_iter()
                                .map(|g| {
                                    DescribedGroup::default()
                                        .with_group_id(g)
                                        .with_error_code(describe_code(n))
                                        .with_group_state(StrBytes::from_static_str("Stable"))
                                        .with_protocol_type(StrBytes::from_static_str("consumer"))
                                })
                                .collect(),
                        )
                        .encode(&mut out, version)?
                }
                other => bail!("the fake coordinator was sent {other:?}"),
            }
            stream.write_i32(out.len() as i32).await?;
            stream.write_all(&out).await?;
        }
    }

    const FAST: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn a_loading_moved_or_unknown_coordinator_is_retried() {
        // FindCoordinator: not available once. DescribeGroups: loading twice, then "not the
        // coordinator", which sends us to FindCoordinator again.
        let fake = FakeCoordinator::start(
            |n| if n == 0 { 15 } else { 0 },
            |n| [14, 14, 16].get(n).copied().unwrap_or(0),
        )
        .await;
        let mut admin = GroupAdmin::connect(&fake.addr)
            .await
            .unwrap()
            .retries(20, FAST);
        let group = admin.describe_group("g").await.unwrap();
        assert_eq!(group.state, "Stable");
        assert_eq!(fake.find_calls.load(Ordering::SeqCst), 3);
        assert_eq!(fake.describe_calls.load(Ordering::SeqCst), 4);
        assert_eq!(admin.coordinator_of("g").unwrap().node_id, 1);
    }

    #[tokio::test]
    async fn retries_are_bounded() {
        let fake = FakeCoordinator::start(|_| 0, |_| 14).await;
        let mut admin = GroupAdmin::connect(&fake.addr)
            .await
            .unwrap()
            .retries(5, FAST);
        let error = admin.describe_group("g").await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "group 'g': DescribeGroups: still COORDINATOR_LOAD_IN_PROGRESS after 5 attempts \
             1ms apart"
        );
        assert_eq!(fake.describe_calls.load(Ordering::SeqCst), 5);

        let fake = FakeCoordinator::start(|_| 15, |_| 0).await;
        let mut admin = GroupAdmin::connect(&fake.addr)
            .await
            .unwrap()
            .retries(3, FAST);
        let error = admin.describe_group("g").await.unwrap_err();
        assert!(
            error
                .to_string()
                .contains("still COORDINATOR_NOT_AVAILABLE after 3 attempts"),
            "{error}"
        );
        assert_eq!(fake.find_calls.load(Ordering::SeqCst), 3);
        assert_eq!(fake.describe_calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn other_errors_are_answers() {
        // GROUP_AUTHORIZATION_FAILED is final; GROUP_ID_NOT_FOUND means a group that is not there.
        let fake = FakeCoordinator::start(|_| 0, |_| 30).await;
        let mut admin = GroupAdmin::connect(&fake.addr)
            .await
            .unwrap()
            .retries(20, FAST);
        let error = admin.describe_group("g").await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "group 'g': DescribeGroups: GROUP_AUTHORIZATION_FAILED"
        );
        assert_eq!(fake.describe_calls.load(Ordering::SeqCst), 1);

        let fake = FakeCoordinator::start(|_| 0, |_| 69).await;
        let mut admin = GroupAdmin::connect(&fake.addr).await.unwrap();
        let group = admin.describe_group("g").await.unwrap();
        assert!(!group.exists() && group.is_inactive(), "{group:?}");
    }

    #[test]
    fn error_names_are_kafkas() {
        assert_eq!(error_name(0), "NONE");
        assert_eq!(error_name(14), "COORDINATOR_LOAD_IN_PROGRESS");
        assert_eq!(error_name(16), "NOT_COORDINATOR");
        assert_eq!(error_name(68), "NON_EMPTY_GROUP");
        assert_eq!(error_name(69), "GROUP_ID_NOT_FOUND");
        assert_eq!(error_name(56), "KAFKA_STORAGE_ERROR");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(9999), "UNKNOWN_ERROR_CODE(9999)");
    }

    fn encoded_assignment(version: i16, topics: &[(&str, &[i32])]) -> Bytes {
        let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
            topics
                .iter()
                .map(|(t, ps)| {
                    AssignedTopic::default()
                        .with_topic(cluster::topic_name(t))
                        .with_partitions(ps.to_vec())
                })
                .collect(),
        );
        let mut buf = bytes::BytesMut::new();
        buf.put_i16(version);
        assignment
            .encode(&mut buf, version.min(3))
            .expect("encode an assignment");
        buf.freeze()
    }

    #[test]
    fn range_assignment_is_kafkas() {
        let subscriptions: BTreeMap<String, Vec<String>> = [
            ("c", vec!["t"]),
            ("a", vec!["t", "u"]),
            ("b", vec!["t", "u"]),
            ("d", vec![]),
        ]
        .into_iter()
        .map(|(m, ts)| (m.to_owned(), ts.into_iter().map(str::to_owned).collect()))
        .collect();
        let counts = BTreeMap::from([("t".to_owned(), 7), ("u".to_owned(), 1)]);
        let assigned = range_assign(&subscriptions, &counts);
        let of = |m: &str| assigned[m].clone();
        let tp = |t: &str, ps: &[i32]| ps.iter().map(|&p| (t.to_owned(), p)).collect::<Vec<_>>();
        // 7 partitions over a, b, c: 3, 2, 2, in member id order; u's one partition goes to a.
        assert_eq!(of("a"), [tp("t", &[0, 1, 2]), tp("u", &[0])].concat());
        assert_eq!(of("b"), tp("t", &[3, 4]));
        assert_eq!(of("c"), tp("t", &[5, 6]));
        assert_eq!(
            of("d"),
            Vec::new(),
            "a member subscribed to nothing gets nothing"
        );
        // More members than partitions: the last ones get none.
        let many: BTreeMap<String, Vec<String>> = (0..5)
            .map(|i| (format!("m{i}"), vec!["u".to_owned()]))
            .collect();
        let assigned = range_assign(&many, &counts);
        assert_eq!(assigned["m0"], tp("u", &[0]));
        assert!((1..5).all(|i| assigned[&format!("m{i}")].is_empty()));
    }

    #[test]
    fn subscriptions_and_assignments_round_trip() {
        let topics = vec!["orders".to_owned(), "audit".to_owned()];
        let owned = vec![("orders".to_owned(), 1), ("orders".to_owned(), 0)];
        let bytes = encode_consumer_subscription(&topics, &owned).unwrap();
        assert_eq!(&bytes[..2], &CONSUMER_PROTOCOL_VERSION.to_be_bytes());
        assert_eq!(decode_consumer_subscription(&bytes).unwrap(), topics);
        // A v0 subscription (topics and user data only), as older clients send it.
        let mut v0 = bytes::BytesMut::new();
        v0.put_i16(0);
        ConsumerProtocolSubscription::default()
            .with_topics(vec![StrBytes::from_static_str("t")])
            .encode(&mut v0, 0)
            .unwrap();
        assert_eq!(
            decode_consumer_subscription(&v0.freeze()).unwrap(),
            vec!["t".to_owned()]
        );
        assert!(decode_consumer_subscription(&Bytes::from_static(&[0])).is_err());

        let partitions = vec![
            ("b".to_owned(), 2),
            ("a".to_owned(), 0),
            ("b".to_owned(), 1),
        ];
        let bytes = encode_consumer_assignment(&partitions).unwrap();
        let mut sorted = partitions.clone();
        sorted.sort();
        assert_eq!(decode_consumer_assignment(&bytes).unwrap(), sorted);
    }

    #[test]
    fn member_errors_that_mean_join_again() {
        for code in [27, 22, 25, 79] {
            assert!(MemberError(code).must_rejoin(), "{}", MemberError(code));
        }
        assert!(!MemberError(30).must_rejoin());
        assert!(MemberError(14).coordinator_not_ready());
        assert!(MemberError(16).coordinator_not_ready());
        assert!(!MemberError(27).coordinator_not_ready());
        assert_eq!(MemberError(27).to_string(), "REBALANCE_IN_PROGRESS");
    }

    #[test]
    fn consumer_assignments_decode_sorted() {
        for version in [0, 1, 3] {
            let bytes = encoded_assignment(version, &[("orders", &[2, 0]), ("audit", &[1])]);
            assert_eq!(
                decode_consumer_assignment(&bytes).unwrap(),
                vec![
                    ("audit".to_owned(), 1),
                    ("orders".to_owned(), 0),
                    ("orders".to_owned(), 2)
                ],
                "version {version}"
            );
        }
        // A version newer than we know is read as the newest we know.
        let bytes = encoded_assignment(7, &[("t", &[0])]);
        assert_eq!(
            decode_consumer_assignment(&bytes).unwrap(),
            vec![("t".to_owned(), 0)]
        );
        assert!(decode_consumer_assignment(&Bytes::new())
            .unwrap()
            .is_empty());
        assert!(decode_consumer_assignment(&Bytes::from_static(&[0])).is_err());
        assert!(decode_consumer_assignment(&Bytes::from_static(&[0, 0, 0, 0, 0, 9])).is_err());
    }
}
