//! Broker-wide connection counts (Kafka's `max.connections` and `max.connections.per.ip`),
//! shared by every shard's listener: one `Arc` created at start, touched once per accept and once
//! per close (the lock is held for a map update, never across an await).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::config::Limits;

pub struct ConnectionLimits {
    max_total: u64,
    max_per_ip: u64,
    /// Open connections, in all and by client address (an address leaves the map at zero, so
    /// the map holds at most one entry per open connection).
    open: Mutex<(u64, HashMap<IpAddr, u64>)>,
}

/// Why a new connection is closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("max.connections ({0}) reached")]
    Total(u64),
    #[error("max.connections.per.ip ({1}) reached for {0}")]
    PerIp(IpAddr, u64),
}

/// One admitted connection; its place is given back when dropped.
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl ConnectionLimits {
    pub fn new(limits: &Limits) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            max_total: limits.max_connections,
            max_per_ip: limits.max_connections_per_ip,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, Refused> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_ip) = &mut *open;
        if *total >= self.max_total {
            return Err(Refused::Total(self.max_total));
        }
        // The limit is at least 1, so an address that is refused already has an entry.
        let from_ip = per_ip.entry(ip).or_insert(0);
        if *from_ip >= self.max_per_ip {
            return Err(Refused::PerIp(ip, self.max_per_ip));
        }
        *from_ip += 1;
        *total += 1;
        Ok(ConnectionSlot {
            limits: self.clone(),
            ip,
        })
    }

    pub fn open_connections(&self) -> u64 {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).0
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_ip) = &mut *open;
        *total -= 1;
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_and_total_limits_and_slots_come_back() {
        let limits = ConnectionLimits::new(&Limits {
            max_connections: 3,
            max_connections_per_ip: 2,
            ..Limits::default()
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = limits.admit(a).unwrap();
        let _a2 = limits.admit(a).unwrap();
        assert_eq!(limits.admit(a).err(), Some(Refused::PerIp(a, 2)));
        let _b1 = limits.admit(b).unwrap();
        assert_eq!(limits.admit(b).err(), Some(Refused::Total(3)));
        drop(a1);
        assert_eq!(limits.open_connections(), 2);
        assert!(limits.admit(b).is_ok());
    }
}
