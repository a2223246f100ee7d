//! [`ConfigError`]: the one line a setting that cannot be used prints at start, naming the flag
//! and its environment variable. Both sources of such errors end here: a value clap's parser
//! refused, and a check after parsing that looks at a file or at two settings together. The
//! name is read from clap's own description of the argument, so it is never written twice.

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Arg, Args, Command};

/// A setting that cannot be used. Displays as one line naming the setting and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {setting}: {problem}")]
pub struct ConfigError {
    /// The flag and its environment variable, e.g. `--bind / MEALKITZ_BIND`.
    pub setting: String,
    pub problem: String,
}

impl ConfigError {
    /// `problem` with the setting that is the field `id` of the arguments `A`.
    pub fn of<A: Args>(id: &str, problem: impl Into<String>) -> ConfigError {
        let command = A::augment_args(Command::new("mealkitz"));
        let arg = command.get_arguments().find(|arg| arg.get_id() == id);
        debug_assert!(arg.is_some(), "no argument {id}");
        ConfigError {
            setting: arg.map_or_else(|| id.to_owned(), label),
            problem: problem.into(),
        }
    }

    /// The value clap refused in `error`, named as `command` (or one of its subcommands)
    /// declares it; `None` when `error` is not about a value (`--help`, an unknown argument…),
    /// which clap reports itself.
    pub fn from_clap(error: &clap::Error, command: &Command) -> Option<ConfigError> {
        if error.kind() != ErrorKind::ValueValidation {
            return None;
        }
        let ContextValue::String(shown) = error.get(ContextKind::InvalidArg)? else {
            return None;
        };
        // clap shows the argument as `--bind <BIND>`.
        let long = shown.split([' ', '=']).next()?.trim_start_matches('-');
        let setting = find_long(command, long).map_or_else(|| shown.clone(), label);
        let problem = std::error::Error::source(error)
            .map(ToString::to_string)
            .unwrap_or_else(|| "is not allowed".to_owned());
        Some(ConfigError {
            setting,
            problem: problem.replace('\n', " "),
        })
    }

    /// Any other error of clap's (an unknown or missing argument), in one line.
    pub fn from_usage(error: &clap::Error) -> ConfigError {
        let rendered = error.render().to_string();
        let first = rendered.lines().next().unwrap_or_default();
        ConfigError {
            setting: "arguments".to_owned(),
            problem: first.trim_start_matches("error: ").to_owned(),
        }
    }
}

/// `--flag / ENVIRONMENT_VARIABLE`, or `--flag` for an argument without an environment twin.
fn label(arg: &Arg) -> String {
    let flag = arg
        .get_long()
        .map_or_else(|| arg.get_id().to_string(), |long| format!("--{long}"));
    match arg.get_env() {
        Some(env) => format!("{flag} / {}", env.to_string_lossy()),
        None => flag,
    }
}

fn find_long<'c>(command: &'c Command, long: &str) -> Option<&'c Arg> {
    command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(long))
        .or_else(|| {
            command
                .get_subcommands()
                .find_map(|sub| find_long(sub, long))
        })
}
