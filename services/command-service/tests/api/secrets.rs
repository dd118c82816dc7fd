//! A password in the configuration shows neither in `--help` nor in the refusal of a
//! bad setting.

use std::process::Command;

const PASSWORD: &str = "pa55-never-shown";

fn run(args: &[&str], url: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_command-service"))
        .args(args)
        .env("DATABASE_URL", url)
        .env("KAFKA_PROPERTIES", format!("sasl.password={PASSWORD}"))
        .output()
        .expect("the binary runs");
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

#[test]
fn help_and_a_refused_setting_never_show_a_password() {
    let help = run(&["--help"], &format!("postgres://app:{PASSWORD}@db:5432/orders"));
    assert!(help.contains("DATABASE_URL") && help.contains("KAFKA_PROPERTIES"), "{help}");
    assert!(!help.contains(PASSWORD), "--help shows a secret:\n{help}");

    let refused = run(&["migrate"], &format!("postgres://app:{PASSWORD}@db:5432/orders?sslmode=sometimes"));
    assert!(refused.contains("sslmode `sometimes` is not one of"), "{refused}");
    assert!(!refused.contains(PASSWORD), "the refusal shows a secret:\n{refused}");
}
