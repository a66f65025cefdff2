//! The harness's ZooKeeper half against real ZooKeeper: ensembles serve, and drop leaves no
//! process behind. Cheap (a few seconds), and it proves CI's ZooKeeper set-up before any broker
//! test depends on it.

mod harness;

use harness::{pid_alive, ZooKeeper};

fn mode(zk: &ZooKeeper, i: usize) -> String {
    let answer = zk.four_letter_word(i, "srvr");
    answer
        .lines()
        .find_map(|l| l.strip_prefix("Mode: "))
        .unwrap_or_else(|| panic!("no Mode in srvr answer of node {i}:\n{answer}"))
        .trim()
        .to_string()
}

#[test]
fn single_node_serves_and_drop_stops_it() {
    let zk = ZooKeeper::start(1);
    assert_eq!(mode(&zk, 0), "standalone");
    assert_eq!(zk.four_letter_word(0, "ruok"), "imok");
    assert_eq!(
        zk.connect_string(),
        format!("127.0.0.1:{}", zk.client_port(0))
    );
    let pids = zk.pids();
    assert_eq!(pids.len(), 1);
    drop(zk);
    for pid in pids {
        assert!(
            !pid_alive(pid),
            "ZooKeeper pid {pid} still alive after drop"
        );
    }
}

#[test]
fn three_node_ensemble_elects_a_leader_and_survives_one_loss() {
    let mut zk = ZooKeeper::start(3);
    let modes: Vec<String> = (0..3).map(|i| mode(&zk, i)).collect();
    assert_eq!(
        modes.iter().filter(|m| *m == "leader").count(),
        1,
        "modes: {modes:?}"
    );
    assert_eq!(
        modes.iter().filter(|m| *m == "follower").count(),
        2,
        "modes: {modes:?}"
    );
    assert_eq!(zk.connect_string().split(',').count(), 3);

    // Losing the leader leaves a quorum of two, which elects a new leader.
    let leader = modes
        .iter()
        .position(|m| m == "leader")
        .expect("one leader");
    zk.stop_node(leader);
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let new_leader =
        harness::wait_until("a new leader", std::time::Duration::from_secs(30), || {
            survivors.iter().copied().find(|&i| {
                harness::four_letter_word(zk.client_port(i), "srvr")
                    .is_ok_and(|a| a.contains("Mode: leader"))
            })
        });
    assert_ne!(new_leader, leader);

    // And the stopped node rejoins.
    zk.start_node(leader);
    assert_eq!(mode(&zk, leader), "follower");

    let pids = zk.pids();
    assert_eq!(pids.len(), 3);
    drop(zk);
    for pid in pids {
        assert!(
            !pid_alive(pid),
            "ZooKeeper pid {pid} still alive after drop"
        );
    }
}

#[test]
fn drop_during_a_panic_still_stops_zookeeper() {
    let pids = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = pids.clone();
    let result = std::thread::spawn(move || {
        let zk = ZooKeeper::start(1);
        seen.lock().unwrap().extend(zk.pids());
        panic!("deliberate test failure");
    })
    .join();
    assert!(result.is_err());
    let pids = pids.lock().unwrap().clone();
    assert_eq!(pids.len(), 1);
    for pid in pids {
        assert!(
            !pid_alive(pid),
            "ZooKeeper pid {pid} still alive after a panicking test"
        );
    }
}
