//! The optional configuration file (`--config <file>` or `REDSTORE_CONFIG`), beneath flags and
//! the environment: a TOML file whose keys are the flags' long names (`listen = "0.0.0.0:50051"`,
//! or in tables: `[kafka] brokers = "…"` for `--kafka-brokers`). A setting is taken from the file
//! only when neither a flag nor its `REDSTORE_*` variable gave it, by adding it to the command line
//! that clap then parses, so one parser checks every value whatever its source. A key no command
//! knows is refused (an operator's typo); a key another command takes is left to that command, so
//! one file serves `up`, `serve` and `migrate` alike.
//!
//! `--print-config` prints the settings in effect, as such a file, with secrets redacted.

use std::collections::BTreeSet;
use std::ffi::OsString;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};

/// The command line with the file's settings added, and the keys it added (for `--print-config`).
pub struct Resolved {
    pub args: Vec<OsString>,
    pub from_file: BTreeSet<String>,
}

/// Adds the file's settings that neither a flag nor the environment gave. Without a file (or when
/// the command line itself does not parse: clap reports that) the command line is left as it is.
pub fn resolve(command: &Command, args: Vec<OsString>) -> Result<Resolved, String> {
    let Some(path) = config_path(&args) else { return Ok(Resolved { args, from_file: BTreeSet::new() }) };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("--config {path}: {e}"))?;
    let table: toml::Table = text.parse().map_err(|e| format!("--config {path}: {e}"))?;
    let mut settings = Vec::new();
    flatten("", &table, &mut settings).map_err(|e| format!("--config {path}: {e}"))?;

    let known = every_long_name(command);
    if let Some((key, _)) = settings.iter().find(|(key, _)| !known.contains(key)) {
        return Err(format!("--config {path}: no command takes a setting `{key}` (a typo?)"));
    }
    let Ok(matches) = command.clone().try_get_matches_from(&args) else {
        return Ok(Resolved { args, from_file: BTreeSet::new() });
    };
    let (leaf, leaf_matches) = leaf(command, &matches);
    let mut added = Vec::new();
    let mut from_file = BTreeSet::new();
    for (key, values) in settings {
        let Some(arg) = leaf.get_arguments().find(|a| a.get_long() == Some(key.as_str())) else { continue };
        if !matches!(leaf_matches.value_source(arg.get_id().as_str()), None | Some(ValueSource::DefaultValue)) {
            continue;
        }
        match arg.get_action() {
            ArgAction::SetTrue => {
                if values.iter().any(|v| v != "true" && v != "false") {
                    return Err(format!("--config {path}: `{key}` is true or false"));
                }
                if values.iter().any(|v| v == "true") {
                    added.push(OsString::from(format!("--{key}")));
                }
            }
            _ => added.extend(values.iter().map(|v| OsString::from(format!("--{key}={v}")))),
        }
        from_file.insert(key);
    }
    let mut args = args;
    // Before a `--`, if there is one: after it, everything is positional.
    let at = args.iter().position(|a| a == "--").unwrap_or(args.len());
    args.splice(at..at, added);
    Ok(Resolved { args, from_file })
}

/// `--config <file>`, `--config=<file>` or `REDSTORE_CONFIG`.
fn config_path(args: &[OsString]) -> Option<String> {
    let mut args = args.iter().map(|a| a.to_string_lossy());
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            return args.next().map(|p| p.into_owned());
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(path.to_owned());
        }
    }
    std::env::var("REDSTORE_CONFIG").ok().filter(|p| !p.is_empty())
}

/// `[kafka] brokers = "…"` → (`kafka-brokers`, ["…"]); an array gives one value per element.
fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<(String, Vec<String>)>) -> Result<(), String> {
    for (key, value) in table {
        let key = format!("{prefix}{}", key.replace('_', "-"));
        let scalar = |v: &toml::Value| match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            toml::Value::Datetime(d) => Ok(d.to_string()),
            _ => Err(format!("`{key}` holds a table or array where a value belongs")),
        };
        match value {
            toml::Value::Table(inner) => flatten(&format!("{key}-"), inner, out)?,
            toml::Value::Array(items) => out.push((key.clone(), items.iter().map(scalar).collect::<Result<_, _>>()?)),
            other => out.push((key.clone(), vec![scalar(other)?])),
        }
    }
    Ok(())
}

fn every_long_name(command: &Command) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = command.get_arguments().filter_map(|a| a.get_long()).map(str::to_owned).collect();
    for sub in command.get_subcommands() {
        names.extend(every_long_name(sub));
    }
    names.remove("config");
    names
}

/// The subcommand that runs, and its matches.
fn leaf<'a>(command: &'a Command, matches: &'a ArgMatches) -> (&'a Command, &'a ArgMatches) {
    match matches.subcommand() {
        Some((name, sub_matches)) => match command.find_subcommand(name) {
            Some(sub) => leaf(sub, sub_matches),
            None => (command, matches),
        },
        None => (command, matches),
    }
}

/// The settings in effect for the command `args` run, as a configuration file: each with where it
/// came from; tokens, passwords and secrets redacted, and the password of any URL.
pub fn print(command: &Command, resolved: &Resolved) -> Result<String, String> {
    let matches = command.clone().try_get_matches_from(&resolved.args).map_err(|e| e.to_string())?;
    let (leaf, leaf_matches) = leaf(command, &matches);
    let mut out = format!(
        "# redstore {}: the settings in effect (a flag, else its REDSTORE_* variable, else --config, else the default)\n",
        leaf.get_name()
    );
    let mut seen = BTreeSet::new();
    for arg in leaf.get_arguments().chain(command.get_arguments()) {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version" | "print-config" | "config") || !seen.insert(long) {
            continue;
        }
        let id = arg.get_id().as_str();
        // The matches that hold it: the subcommand's, or the top level's (global flags).
        let holder = [leaf_matches, &matches].into_iter().find(|m| m.ids().any(|i| i.as_str() == id));
        let source = holder.and_then(|m| m.value_source(id));
        let values: Vec<String> = holder
            .and_then(|m| m.get_raw(id))
            .map(|raw| raw.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let from = match source {
            _ if resolved.from_file.contains(long) => "file",
            Some(ValueSource::CommandLine) => "flag",
            Some(ValueSource::EnvVariable) => "env",
            Some(ValueSource::DefaultValue) => "default",
            _ => "unset",
        };
        let shown: Vec<String> = values.iter().map(|v| redact(long, v)).collect();
        let value = match (arg.get_action(), shown.as_slice()) {
            (ArgAction::SetTrue, [v]) => v.clone(),
            (_, []) => {
                out.push_str(&format!("# {long} = (unset)\n"));
                continue;
            }
            (_, [one]) if !matches!(arg.get_action(), ArgAction::Append) => toml_string(one),
            (_, many) => format!("[{}]", many.iter().map(|v| toml_string(v)).collect::<Vec<_>>().join(", ")),
        };
        out.push_str(&format!("{long} = {value}  # {from}\n"));
    }
    Ok(out)
}

fn toml_string(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

/// A secret's value hidden; a URL's password hidden.
fn redact(key: &str, value: &str) -> String {
    let secret = ["token", "password", "secret"].iter().any(|word| key.contains(word)) && !key.ends_with("-file");
    if secret {
        return "(redacted)".to_owned();
    }
    // scheme://user:password@host…
    if let Some((scheme, rest)) = value.split_once("://")
        && let Some((userinfo, host)) = rest.split_once('@')
        && let Some((user, _password)) = userinfo.split_once(':')
    {
        return format!("{scheme}://{user}:(redacted)@{host}");
    }
    value.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_url_passwords_are_redacted_and_the_rest_shown() {
        assert_eq!(redact("service-token", "s3cret-value"), "(redacted)");
        assert_eq!(redact("kafka-sasl-password", "pw"), "(redacted)");
        assert_eq!(redact("service-token-file", "/run/token"), "/run/token");
        assert_eq!(
            redact("database-url", "postgres://redstore_app:pw@db:5432/redstore"),
            "postgres://redstore_app:(redacted)@db:5432/redstore"
        );
        assert_eq!(
            redact("database-url", "postgres://redstore_app@db/redstore"),
            "postgres://redstore_app@db/redstore"
        );
        assert_eq!(redact("listen", "0.0.0.0:50051"), "0.0.0.0:50051");
    }

    #[test]
    fn tables_and_arrays_flatten_to_flag_names() {
        let table: toml::Table = "listen = \"0.0.0.0:1\"\n[kafka]\nbrokers = \"b:9092\"\npartitions = 6\n[edge]\ncors_origin = [\"https://a\", \"https://b\"]\n".parse().unwrap();
        let mut out = Vec::new();
        flatten("", &table, &mut out).unwrap();
        out.sort();
        assert_eq!(
            out,
            vec![
                ("edge-cors-origin".to_owned(), vec!["https://a".to_owned(), "https://b".to_owned()]),
                ("kafka-brokers".to_owned(), vec!["b:9092".to_owned()]),
                ("kafka-partitions".to_owned(), vec!["6".to_owned()]),
                ("listen".to_owned(), vec!["0.0.0.0:1".to_owned()]),
            ]
        );
    }
}
