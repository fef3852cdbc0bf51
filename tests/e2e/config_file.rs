//! The configuration file beneath flags and the environment, and `--print-config`.

use crate::helpers::*;

fn redstore() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_redstore"));
    command.env_remove("REDSTORE_SERVICE_TOKEN").env_remove("REDSTORE_CONFIG").env_remove("REDSTORE_GRACE_PERIOD");
    command
}

#[test]
fn a_flag_beats_its_variable_which_beats_the_file_which_beats_the_default_and_secrets_stay_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("redstore.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:50999\"\ngrace_period = \"20s\"\ndrain_delay = \"2s\"\nno_demo = true\n\
         [kafka]\nbrokers = \"k1:9092\"\n",
    )
    .unwrap();
    let out = redstore()
        .args(["--config"])
        .arg(&file)
        .args(["up", "--print-config", "--drain-delay", "1s", "--database-url", "postgres://app:hunter2@db/x"])
        .env("REDSTORE_GRACE_PERIOD", "7s")
        .env("REDSTORE_SERVICE_TOKEN", "a-token-of-at-least-32-characters-long-0123")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    for line in [
        "listen = \"127.0.0.1:50999\"  # file",
        "grace-period = \"7s\"  # env",
        "drain-delay = \"1s\"  # flag",
        "no-demo = true  # file",
        "kafka-brokers = \"k1:9092\"  # file",
        "db-pool-size = \"32\"  # default",
        "database-url = \"postgres://app:(redacted)@db/x\"  # flag",
        "service-token = \"(redacted)\"  # env",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
    assert!(!text.contains("hunter2") && !text.contains("0123"), "a secret printed:\n{text}");
}

#[test]
fn a_setting_no_command_takes_is_refused_naming_it_and_a_missing_file_too() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("redstore.toml");
    std::fs::write(&file, "lisen = \"0.0.0.0:50051\"\n").unwrap();
    let out = redstore().arg("--config").arg(&file).args(["up"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("`lisen`"), "{stderr}");

    // A setting for another command is that command's: `migrate` leaves `listen` alone.
    std::fs::write(&file, "listen = \"0.0.0.0:50051\"\n").unwrap();
    let out = redstore().arg("--config").arg(&file).args(["migrate", "--print-config"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    let out = redstore().args(["up"]).env("REDSTORE_CONFIG", dir.path().join("nope.toml")).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("nope.toml"), "{stderr}");
}

#[test]
fn up_runs_on_what_the_file_says() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("from-the-file");
    let file = dir.path().join("redstore.toml");
    std::fs::write(&file, format!("data_dir = {:?}\n", data.to_str().unwrap())).unwrap();
    let server = Process::start_with_env(&["up"], &[("REDSTORE_CONFIG", file.to_str().unwrap())]);
    assert!(data.join("redstore.db").exists(), "the database is in the file's data directory");
    drop(server);
}
