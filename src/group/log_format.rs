//! The records of `__consumer_offsets`, in Kafka's own key and value schemas (Kafka's
//! `OffsetCommitKey`/`OffsetCommitValue` and `GroupMetadataKey`/`GroupMetadataValue`), so Kafka's
//! tooling can read what skein writes and skein can load what Kafka wrote.
//!
//! skein writes offset keys v1 with values v3 (Kafka 2.1+), group keys v2 with values v3 (Kafka
//! 2.3+, static membership); it reads every non-flexible value version (0-3). A null value is a
//! tombstone: the offset or the group is gone. Everything read is checked before anything is
//! sized by it: a stored record is never a crash trigger.

use bytes::{BufMut, Bytes, BytesMut};

/// What a key of `__consumer_offsets` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
}

/// A committed offset as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    /// -1 when the client gave none.
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

/// A member of a stored group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the group's chosen protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A group as stored after each rebalance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub current_state_timestamp: i64,
    pub members: Vec<MemberValue>,
}

/// Why a stored record cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("__consumer_offsets record: {0}")]
pub struct FormatError(pub &'static str);

fn put_string(buf: &mut BytesMut, s: &str) {
    // Every string stored came off the wire as an int16-length string (group, topic, instance
    // and client ids, protocol names), or is bounded below it: member ids cut their client id
    // (`state::MAX_CLIENT_ID_IN_MEMBER_ID`), commit metadata by `offset.metadata.max.bytes`
    // (at most 32767), client hosts are addresses.
    assert!(
        s.len() <= i16::MAX as usize,
        "stored strings fit an int16 length"
    );
    buf.put_i16(s.len() as i16);
    buf.put_slice(s.as_bytes());
}

fn put_nullable_string(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(buf, s),
        None => buf.put_i16(-1),
    }
}

fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    buf.put_i32(b.len() as i32);
    buf.put_slice(b);
}

pub fn offset_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut buf = BytesMut::with_capacity(8 + group.len() + topic.len());
    buf.put_i16(1);
    put_string(&mut buf, group);
    put_string(&mut buf, topic);
    buf.put_i32(partition);
    buf.freeze()
}

pub fn group_key(group: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(4 + group.len());
    buf.put_i16(2);
    put_string(&mut buf, group);
    buf.freeze()
}

pub fn offset_value(value: &OffsetValue) -> Bytes {
    let mut buf = BytesMut::with_capacity(26 + value.metadata.len());
    buf.put_i16(3);
    buf.put_i64(value.offset);
    buf.put_i32(value.leader_epoch);
    put_string(&mut buf, &value.metadata);
    buf.put_i64(value.commit_timestamp);
    buf.freeze()
}

pub fn group_value(value: &GroupValue) -> Bytes {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i16(3);
    put_string(&mut buf, &value.protocol_type);
    buf.put_i32(value.generation);
    put_nullable_string(&mut buf, value.protocol.as_deref());
    put_nullable_string(&mut buf, value.leader.as_deref());
    buf.put_i64(value.current_state_timestamp);
    buf.put_i32(value.members.len() as i32);
    for m in &value.members {
        put_string(&mut buf, &m.member_id);
        put_nullable_string(&mut buf, m.group_instance_id.as_deref());
        put_string(&mut buf, &m.client_id);
        put_string(&mut buf, &m.client_host);
        buf.put_i32(m.rebalance_timeout_ms);
        buf.put_i32(m.session_timeout_ms);
        put_bytes(&mut buf, &m.subscription);
        put_bytes(&mut buf, &m.assignment);
    }
    buf.freeze()
}

/// A bounds-checked big-endian reader over one stored key or value.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.buf.len() < n {
            return Err(FormatError("truncated"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn i16(&mut self) -> Result<i16, FormatError> {
        Ok(i16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn i32(&mut self) -> Result<i32, FormatError> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn i64(&mut self) -> Result<i64, FormatError> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn nullable_string(&mut self) -> Result<Option<String>, FormatError> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let bytes = self.take(len as usize)?;
        std::str::from_utf8(bytes)
            .map(|s| Some(s.to_owned()))
            .map_err(|_| FormatError("a string is not UTF-8"))
    }

    fn string(&mut self) -> Result<String, FormatError> {
        self.nullable_string()?
            .ok_or(FormatError("a null string where one is required"))
    }

    fn bytes(&mut self) -> Result<Bytes, FormatError> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(Bytes::new());
        }
        Ok(Bytes::copy_from_slice(self.take(len as usize)?))
    }
}

pub fn parse_key(key: &[u8]) -> Result<Key, FormatError> {
    let mut r = Reader { buf: key };
    match r.i16()? {
        0 | 1 => Ok(Key::Offset {
            group: r.string()?,
            topic: r.string()?,
            partition: r.i32()?,
        }),
        2 => Ok(Key::Group { group: r.string()? }),
        _ => Err(FormatError("unknown key version")),
    }
}

pub fn parse_offset_value(value: &[u8]) -> Result<OffsetValue, FormatError> {
    let mut r = Reader { buf: value };
    let version = r.i16()?;
    if !(0..=3).contains(&version) {
        return Err(FormatError("unknown offset value version"));
    }
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = r.string()?;
    let commit_timestamp = r.i64()?;
    // v1's expire timestamp (after the commit timestamp) is not used since Kafka 2.1.
    Ok(OffsetValue {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp,
    })
}

pub fn parse_group_value(value: &[u8]) -> Result<GroupValue, FormatError> {
    let mut r = Reader { buf: value };
    let version = r.i16()?;
    if !(0..=3).contains(&version) {
        return Err(FormatError("unknown group value version"));
    }
    let protocol_type = r.string()?;
    let generation = r.i32()?;
    let protocol = r.nullable_string()?;
    let leader = r.nullable_string()?;
    let current_state_timestamp = if version >= 2 { r.i64()? } else { -1 };
    let count = r.i32()?;
    // Each member takes at least 22 bytes: a count beyond what is left is a lie.
    if count < 0 || count as usize > r.buf.len() / 22 {
        return Err(FormatError("member count larger than the record"));
    }
    let mut members = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let member_id = r.string()?;
        let group_instance_id = if version >= 3 {
            r.nullable_string()?
        } else {
            None
        };
        let client_id = r.string()?;
        let client_host = r.string()?;
        let rebalance_timeout_ms = if version >= 1 { r.i32()? } else { -1 };
        let session_timeout_ms = r.i32()?;
        let rebalance_timeout_ms = if version >= 1 {
            rebalance_timeout_ms
        } else {
            session_timeout_ms
        };
        members.push(MemberValue {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription: r.bytes()?,
            assignment: r.bytes()?,
        });
    }
    Ok(GroupValue {
        protocol_type,
        generation,
        protocol,
        leader,
        current_state_timestamp,
        members,
    })
}

/// Kafka's `partitionFor`: `Utils.abs(groupId.hashCode) % partitions`, with Java's
/// `String.hashCode` over UTF-16 code units, so a group lands on the partition Kafka would use.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let hash = group.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_match_kafka() {
        // Java's String.hashCode: "a" = 97, "test-group" = 627_841_412, "my-group" =
        // -1_906_497_762 (negative: abs first).
        assert_eq!(partition_for("", 50), 0);
        assert_eq!(partition_for("a", 50), 47);
        assert_eq!(partition_for("test-group", 50), 12);
        assert_eq!(partition_for("my-group", 50), 1_906_497_762 % 50);
        // Non-ASCII: hashed over UTF-16 units, as Java does ("é" = 0xE9).
        assert_eq!(partition_for("é", 1000), 233);
    }

    #[test]
    fn values_round_trip() {
        let offset = OffsetValue {
            offset: 42,
            leader_epoch: 7,
            metadata: "meta".into(),
            commit_timestamp: 1_700_000_000_000,
        };
        assert_eq!(parse_offset_value(&offset_value(&offset)).unwrap(), offset);
        let group = GroupValue {
            protocol_type: "consumer".into(),
            generation: 3,
            protocol: Some("range".into()),
            leader: Some("m-1".into()),
            current_state_timestamp: 5,
            members: vec![MemberValue {
                member_id: "m-1".into(),
                group_instance_id: Some("i-1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 10_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        assert_eq!(parse_group_value(&group_value(&group)).unwrap(), group);
        assert_eq!(
            parse_key(&offset_key("g", "t", 3)).unwrap(),
            Key::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 3
            }
        );
        assert_eq!(
            parse_key(&group_key("g")).unwrap(),
            Key::Group { group: "g".into() }
        );
    }

    #[test]
    fn damaged_records_are_errors_not_crashes() {
        let group = group_value(&GroupValue {
            protocol_type: "consumer".into(),
            generation: 1,
            protocol: None,
            leader: None,
            current_state_timestamp: 0,
            members: vec![],
        });
        for cut in 0..group.len() {
            assert!(parse_group_value(&group[..cut]).is_err());
        }
        // A member count of two billion in a short record.
        let mut lying = group.to_vec();
        let at = lying.len() - 4;
        lying[at..].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(parse_group_value(&lying).is_err());
        assert!(parse_key(&[0, 9]).is_err());
        assert!(parse_offset_value(&[0, 3, 1]).is_err());
    }
}
