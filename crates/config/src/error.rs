/// Why a configuration cannot start Keel. The texts are etcd's where etcd
/// has one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A command-line syntax error, reported as Go's `flag` package does:
    /// the message, then the usage, exit code 2.
    #[error("{0}")]
    Syntax(String),
    /// etcd's "error verifying flags": exit code 1.
    #[error("{0}")]
    Invalid(String),
    /// A flag that would turn on a protection Keel does not provide yet.
    #[error("--{flag} is not supported by Keel yet: {why}")]
    Refused { flag: &'static str, why: &'static str },
}

impl ConfigError {
    /// etcd's exit code for this kind of error.
    pub fn exit_code(&self) -> i32 {
        match self {
            ConfigError::Syntax(_) => 2,
            ConfigError::Invalid(_) | ConfigError::Refused { .. } => 1,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        ConfigError::Invalid(message.into())
    }
}
