//! A panic on any thread of a broker ends the process with status 101 after logging it
//! (`cli::broker::stop_on_panic`): a half-alive broker that stays registered is worse than a dead
//! one. The test runs itself again as a child that installs the hook and panics on a thread
//! other than main, as a shard would, and checks how the child ended.

use std::process::Command;
use std::time::Duration;

const CHILD: &str = "SKEIN_PANIC_CHILD";

#[test]
fn a_panic_on_any_thread_ends_the_process_with_101() {
    if std::env::var_os(CHILD).is_some() {
        skein::cli::init_logging();
        skein::cli::broker::stop_on_panic();
        let shard = std::thread::Builder::new()
            .name("skein-shard-7".to_owned())
            .spawn(|| panic!("a bug on a shard"))
            .unwrap();
        let _ = shard.join();
        // Not reached: the hook ends the process. Sleeping (bounded) makes "the process went on"
        // visible to the parent as a clean exit, which it refuses.
        std::thread::sleep(Duration::from_secs(5));
        return;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_panic_on_any_thread_ends_the_process_with_101",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .expect("run the child");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(101),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let log = format!("{stdout}{stderr}");
    assert!(
        log.contains("panic on thread 'skein-shard-7'") && log.contains("stopping the broker"),
        "{log}"
    );
}
