//! The wall clock in Kafka's unit (milliseconds since the Unix epoch): record timestamps, segment
//! ages, retention, znode timestamps. A leaf every layer may use; any thread.

/// Milliseconds since the Unix epoch (0 if the clock is set before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
