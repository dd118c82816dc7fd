//! The local scripts find the binaries where the build put them, whoever runs them:
//! `deploy/local/services.sh` run directly (as an operator restarting one crashed
//! service would) agrees with `make` on the target directory.
#![allow(clippy::unwrap_used)]

use std::{path::PathBuf, process::Command, time::Duration};

/// The clone this test runs in. Read when it runs (cargo test sets the variable), not
/// compiled in: the build cache is shared by clones, and a test binary built in
/// another clone is reused here when the sources are the same.
fn repo_root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR (run by cargo test)");
    PathBuf::from(manifest).join("../..").canonicalize().unwrap()
}

/// A running process that `services.sh` should take for the stats-aggregator: a copy
/// of `sleep` at the binary's path under the default target directory of `home`.
struct FakeService {
    child: std::process::Child,
}

impl Drop for FakeService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn services_sh_run_directly_finds_the_binaries_make_builds() {
    let scratch = std::env::temp_dir().join(format!("scripts-{}", orders_testkit::unique_suffix()));
    let home = scratch.join("home");
    let bin_dir = home.join(".cache/orders-platform/target/debug");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let binary = bin_dir.join("stats-aggregator");
    std::fs::copy("/bin/sleep", &binary).unwrap();
    let state = scratch.join("local");
    std::fs::create_dir_all(state.join("services")).unwrap();
    let fake = FakeService { child: Command::new(&binary).arg("120").spawn().unwrap() };
    std::fs::write(state.join("services/stats-aggregator.pid"), fake.child.id().to_string()).unwrap();
    // The exe link appears once the process has exec'd.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read_link(format!("/proc/{}/exe", fake.child.id())).ok() != Some(binary.clone()) {
        assert!(std::time::Instant::now() < deadline, "the fake service did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    let output = Command::new(repo_root().join("deploy/local/services.sh"))
        .arg("status")
        .env_remove("CARGO_TARGET_DIR")
        .env("HOME", &home)
        .env("ORDERS_LOCAL_DIR", &state)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().find(|l| l.contains("stats-aggregator")).unwrap_or_default().to_string();
    assert!(
        line.contains(&format!("pid {}", fake.child.id())),
        "status should see the running service: {stdout}"
    );

    // And make agrees with the script on where binaries go.
    let make = Command::new("make")
        .args(["-s", "--no-print-directory", "-C"])
        .arg(repo_root())
        .arg("print-target-dir")
        .env_remove("CARGO_TARGET_DIR")
        .env("HOME", &home)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&make.stdout).trim(),
        home.join(".cache/orders-platform/target").display().to_string(),
        "{}",
        String::from_utf8_lossy(&make.stderr)
    );
    drop(fake);
    let _ = std::fs::remove_dir_all(&scratch);
}
