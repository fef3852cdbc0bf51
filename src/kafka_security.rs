//! How the distributed shape reaches a managed Kafka (MSK, Confluent Cloud, Aiven): TLS with the
//! brokers' certificate authority, and a SASL login. The flags, what they become
//! ([`KafkaSecurity`]) and how a Kafka worker child is handed them (its environment) live here
//! together, so the two directions cannot drift apart.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use redstore_platform::kafka::{KafkaSecurity, SaslLogin};

const TLS_ENV: &str = "REDSTORE_KAFKA_TLS";
const CA_FILE_ENV: &str = "REDSTORE_KAFKA_CA_FILE";
const MECHANISM_ENV: &str = "REDSTORE_KAFKA_SASL_MECHANISM";
const USERNAME_ENV: &str = "REDSTORE_KAFKA_SASL_USERNAME";
const PASSWORD_ENV: &str = "REDSTORE_KAFKA_SASL_PASSWORD";
const PASSWORD_FILE_ENV: &str = "REDSTORE_KAFKA_SASL_PASSWORD_FILE";

#[derive(Args, Debug, Default, Clone)]
pub struct KafkaSecurityArgs {
    /// Reach the Kafka brokers over TLS, checking their certificates.
    #[arg(long, env = TLS_ENV)]
    pub kafka_tls: bool,
    /// PEM file of the authority that signed the brokers' certificates (the system's
    /// authorities when left out).
    #[arg(long, env = CA_FILE_ENV, requires = "kafka_tls")]
    pub kafka_ca_file: Option<PathBuf>,
    /// Sign in to the brokers with SASL using this mechanism (SCRAM needs a broker that keeps
    /// SCRAM credentials; PLAIN sends the password as it is, so use it only with --kafka-tls).
    #[arg(long, env = MECHANISM_ENV, value_enum, requires = "kafka_sasl_username")]
    pub kafka_sasl_mechanism: Option<SaslMechanism>,
    /// The SASL user name.
    #[arg(long, env = USERNAME_ENV, requires = "kafka_sasl_mechanism")]
    pub kafka_sasl_username: Option<String>,
    /// A file holding the SASL password (its last line ending is ignored). The password may
    /// also come from REDSTORE_KAFKA_SASL_PASSWORD; never put it on a command line, which every
    /// user of the machine can read.
    #[arg(long, env = PASSWORD_FILE_ENV, requires = "kafka_sasl_mechanism", conflicts_with = "kafka_sasl_password")]
    pub kafka_sasl_password_file: Option<PathBuf>,
    /// The SASL password, from the environment.
    #[arg(long, env = PASSWORD_ENV, hide = true, hide_env_values = true, requires = "kafka_sasl_mechanism")]
    pub kafka_sasl_password: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SaslMechanism {
    Plain,
    #[value(name = "scram-sha-256")]
    ScramSha256,
    #[value(name = "scram-sha-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// librdkafka's name of the mechanism.
    fn as_kafka(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    fn from_kafka(name: &str) -> Option<Self> {
        Self::value_variants().iter().copied().find(|m| m.as_kafka() == name)
    }
}

impl KafkaSecurityArgs {
    /// What the flags ask for; an error names the flag to mend.
    pub fn security(&self) -> Result<KafkaSecurity, String> {
        let sasl = match (self.kafka_sasl_mechanism, &self.kafka_sasl_username) {
            (Some(mechanism), Some(username)) => {
                let password = match (&self.kafka_sasl_password_file, &self.kafka_sasl_password) {
                    (Some(file), _) => read_password(file)?,
                    (None, Some(password)) => password.clone(),
                    (None, None) => {
                        return Err(format!(
                            "--kafka-sasl-mechanism needs a password: --kafka-sasl-password-file or {PASSWORD_ENV}"
                        ));
                    }
                };
                if password.is_empty() {
                    return Err("--kafka-sasl-password-file: the SASL password is empty".to_owned());
                }
                Some(SaslLogin { mechanism: mechanism.as_kafka().to_owned(), username: username.clone(), password })
            }
            _ => None,
        };
        Ok(KafkaSecurity { tls: self.kafka_tls, ca_file: self.kafka_ca_file.clone(), sasl })
    }
}

fn read_password(file: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("--kafka-sasl-password-file {}: cannot read it: {e}", file.display()))?;
    Ok(text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text).to_owned())
}

/// The environment that gives a child `redstore` process the same security (the password
/// through the environment, never its command line).
pub fn child_env(security: &KafkaSecurity) -> Vec<(&'static str, String)> {
    let mut env = vec![(TLS_ENV, security.tls.to_string())];
    if let Some(ca) = &security.ca_file {
        env.push((CA_FILE_ENV, ca.to_string_lossy().into_owned()));
    }
    if let Some(sasl) = &security.sasl {
        if let Some(mechanism) = SaslMechanism::from_kafka(&sasl.mechanism)
            && let Some(value) = mechanism.to_possible_value()
        {
            env.push((MECHANISM_ENV, value.get_name().to_owned()));
        }
        env.push((USERNAME_ENV, sasl.username.clone()));
        env.push((PASSWORD_ENV, sasl.password.clone()));
    }
    env
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        security: KafkaSecurityArgs,
    }

    fn parse(args: &[&str]) -> Result<KafkaSecurity, String> {
        let cli =
            Cli::try_parse_from(std::iter::once("redstore").chain(args.iter().copied())).map_err(|e| e.to_string())?;
        cli.security.security()
    }

    #[test]
    fn plain_text_unless_asked() {
        let security = parse(&[]).expect("parses");
        assert_eq!(security.protocol(), "plaintext");
        assert!(child_env(&security).iter().all(|(name, _)| *name != PASSWORD_ENV));
    }

    #[test]
    fn tls_and_a_scram_login_from_a_password_file() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("password");
        std::fs::write(&file, "s3cret\n").expect("write");
        let security = parse(&[
            "--kafka-tls",
            "--kafka-ca-file",
            "/etc/kafka/ca.pem",
            "--kafka-sasl-mechanism",
            "scram-sha-512",
            "--kafka-sasl-username",
            "redstore",
            "--kafka-sasl-password-file",
            file.to_str().expect("utf-8"),
        ])
        .expect("parses");
        assert_eq!(security.protocol(), "sasl_ssl");
        let sasl = security.sasl.as_ref().expect("a login");
        assert_eq!(
            (sasl.mechanism.as_str(), sasl.username.as_str(), sasl.password.as_str()),
            ("SCRAM-SHA-512", "redstore", "s3cret")
        );
        assert!(!format!("{security:?}").contains("s3cret"), "the password never shows in Debug output");
    }

    #[test]
    fn what_a_child_is_handed_parses_back_to_the_same_security() {
        let security = KafkaSecurity {
            tls: true,
            ca_file: Some("/ca.pem".into()),
            sasl: Some(SaslLogin { mechanism: "SCRAM-SHA-256".into(), username: "u".into(), password: "p".into() }),
        };
        let env = child_env(&security);
        let get = |name: &str| env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
        let mut args = vec!["--kafka-ca-file".to_owned(), get(CA_FILE_ENV).expect("ca")];
        args.extend(["--kafka-sasl-mechanism".to_owned(), get(MECHANISM_ENV).expect("mechanism")]);
        args.extend(["--kafka-sasl-username".to_owned(), get(USERNAME_ENV).expect("user")]);
        args.extend(["--kafka-sasl-password".to_owned(), get(PASSWORD_ENV).expect("password")]);
        assert_eq!(get(TLS_ENV).as_deref(), Some("true"));
        args.push("--kafka-tls".to_owned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(parse(&refs).expect("parses"), security);
        // ... and each variable handed over is one a flag reads.
        let command = <Cli as clap::CommandFactory>::command();
        let read: Vec<String> =
            command.get_arguments().filter_map(|a| a.get_env()).map(|e| e.to_string_lossy().into_owned()).collect();
        for (name, _) in &env {
            assert!(read.iter().any(|r| r == name), "{name} is read by no flag: {read:?}");
        }
    }

    #[test]
    fn a_half_given_login_is_refused_naming_what_is_missing() {
        let no_password = parse(&["--kafka-sasl-mechanism", "plain", "--kafka-sasl-username", "u"]).unwrap_err();
        assert!(no_password.contains("--kafka-sasl-password-file"), "{no_password}");
        let no_user = parse(&["--kafka-sasl-mechanism", "plain"]).unwrap_err();
        assert!(no_user.contains("--kafka-sasl-username"), "{no_user}");
        let ca_without_tls = parse(&["--kafka-ca-file", "/ca.pem"]).unwrap_err();
        assert!(ca_without_tls.contains("--kafka-tls"), "{ca_without_tls}");
        let unreadable = parse(&[
            "--kafka-sasl-mechanism",
            "plain",
            "--kafka-sasl-username",
            "u",
            "--kafka-sasl-password-file",
            "/nonexistent/password",
        ])
        .unwrap_err();
        assert!(unreadable.contains("/nonexistent/password"), "{unreadable}");
    }
}
