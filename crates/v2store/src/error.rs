//! v2's numbered errors (etcd's `v2error/error.go`).

use crate::json::write_json_string;

/// A v2 error code (`errorCode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    KeyNotFound = 100,
    TestFailed = 101,
    NotFile = 102,
    NotDir = 104,
    NodeExist = 105,
    RootReadOnly = 107,
    DirNotEmpty = 108,
    Unauthorized = 110,
    PrevValueRequired = 201,
    TtlNan = 202,
    IndexNan = 203,
    InvalidField = 209,
    InvalidForm = 210,
    RefreshValue = 211,
    RefreshTtlRequired = 212,
    RaftInternal = 300,
    LeaderElect = 301,
    EventIndexCleared = 401,
}

/// A v2 error as the API returns it:
/// `{"errorCode":N,"message":"...","cause":"...","index":N}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} ({cause})", code.message())]
pub struct V2Error {
    pub code: ErrorCode,
    /// Omitted from the JSON when empty.
    pub cause: String,
    pub index: u64,
}

impl ErrorCode {
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::KeyNotFound => "Key not found",
            ErrorCode::TestFailed => "Compare failed",
            ErrorCode::NotFile => "Not a file",
            ErrorCode::NotDir => "Not a directory",
            ErrorCode::NodeExist => "Key already exists",
            ErrorCode::RootReadOnly => "Root is read only",
            ErrorCode::DirNotEmpty => "Directory not empty",
            ErrorCode::Unauthorized => "The request requires user authentication",
            ErrorCode::PrevValueRequired => "PrevValue is Required in POST form",
            ErrorCode::TtlNan => "The given TTL in POST form is not a number",
            ErrorCode::IndexNan => "The given index in POST form is not a number",
            ErrorCode::InvalidField => "Invalid field",
            ErrorCode::InvalidForm => "Invalid POST form",
            ErrorCode::RefreshValue => "Value provided on refresh",
            ErrorCode::RefreshTtlRequired => "A TTL must be provided on refresh",
            ErrorCode::RaftInternal => "Raft Internal Error",
            ErrorCode::LeaderElect => "During Leader Election",
            ErrorCode::EventIndexCleared => "The event in requested index is outdated and cleared",
        }
    }

    /// The HTTP status: 100 → 404, 101 → 412, 102 → 403, 105 → 412,
    /// 108 → 403, 110 → 401, 300 and 301 → 500, everything else 400.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::KeyNotFound => 404,
            ErrorCode::TestFailed | ErrorCode::NodeExist => 412,
            ErrorCode::NotFile | ErrorCode::DirNotEmpty => 403,
            ErrorCode::Unauthorized => 401,
            ErrorCode::RaftInternal | ErrorCode::LeaderElect => 500,
            _ => 400,
        }
    }

    /// The number of the JSON's `errorCode`.
    pub fn number(self) -> u16 {
        self as u16
    }
}

impl V2Error {
    pub fn new(code: ErrorCode, cause: impl Into<String>, index: u64) -> V2Error {
        V2Error { code, cause: cause.into(), index }
    }

    /// The body, with its trailing newline.
    pub fn to_json(&self) -> String {
        let mut out = format!("{{\"errorCode\":{},\"message\":", self.code.number());
        write_json_string(&mut out, self.code.message());
        if !self.cause.is_empty() {
            out.push_str(",\"cause\":");
            write_json_string(&mut out, &self.cause);
        }
        out.push_str(&format!(",\"index\":{}}}\n", self.index));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_code() {
        let table = [
            (ErrorCode::KeyNotFound, 100, 404),
            (ErrorCode::TestFailed, 101, 412),
            (ErrorCode::NotFile, 102, 403),
            (ErrorCode::NotDir, 104, 400),
            (ErrorCode::NodeExist, 105, 412),
            (ErrorCode::RootReadOnly, 107, 400),
            (ErrorCode::DirNotEmpty, 108, 403),
            (ErrorCode::Unauthorized, 110, 401),
            (ErrorCode::PrevValueRequired, 201, 400),
            (ErrorCode::TtlNan, 202, 400),
            (ErrorCode::IndexNan, 203, 400),
            (ErrorCode::InvalidField, 209, 400),
            (ErrorCode::InvalidForm, 210, 400),
            (ErrorCode::RefreshValue, 211, 400),
            (ErrorCode::RefreshTtlRequired, 212, 400),
            (ErrorCode::RaftInternal, 300, 500),
            (ErrorCode::LeaderElect, 301, 500),
            (ErrorCode::EventIndexCleared, 401, 400),
        ];
        for (code, number, status) in table {
            assert_eq!((code.number(), code.http_status()), (number, status), "{code:?}");
        }
    }

    #[test]
    fn bodies_match_the_transcripts() {
        let cases = [
            (
                V2Error::new(ErrorCode::KeyNotFound, "/missing", 5),
                r#"{"errorCode":100,"message":"Key not found","cause":"/missing","index":5}"#,
            ),
            (V2Error::new(ErrorCode::NotFile, "", 20), r#"{"errorCode":102,"message":"Not a file","index":20}"#),
            (
                V2Error::new(ErrorCode::IndexNan, "invalid value for \"prevIndex\"", 0),
                r#"{"errorCode":203,"message":"The given index in POST form is not a number","cause":"invalid value for \"prevIndex\"","index":0}"#,
            ),
            (
                V2Error::new(ErrorCode::PrevValueRequired, "\"prevValue\" cannot be empty", 0),
                r#"{"errorCode":201,"message":"PrevValue is Required in POST form","cause":"\"prevValue\" cannot be empty","index":0}"#,
            ),
            (
                V2Error::new(ErrorCode::RefreshValue, "A value was provided on a refresh", 0),
                r#"{"errorCode":211,"message":"Value provided on refresh","cause":"A value was provided on a refresh","index":0}"#,
            ),
            (
                V2Error::new(ErrorCode::RefreshTtlRequired, "No TTL value set", 0),
                r#"{"errorCode":212,"message":"A TTL must be provided on refresh","cause":"No TTL value set","index":0}"#,
            ),
            (
                V2Error::new(ErrorCode::RaftInternal, "etcdserver: request timed out", 0),
                r#"{"errorCode":300,"message":"Raft Internal Error","cause":"etcdserver: request timed out","index":0}"#,
            ),
            (
                V2Error::new(ErrorCode::InvalidField, "\"wait\" can only be used with GET requests", 0),
                r#"{"errorCode":209,"message":"Invalid field","cause":"\"wait\" can only be used with GET requests","index":0}"#,
            ),
            (
                V2Error::new(ErrorCode::TtlNan, "invalid value for \"ttl\"", 0),
                r#"{"errorCode":202,"message":"The given TTL in POST form is not a number","cause":"invalid value for \"ttl\"","index":0}"#,
            ),
        ];
        for (err, body) in cases {
            assert_eq!(err.to_json(), format!("{body}\n"));
        }
    }

    #[test]
    fn display_is_gos_error_string() {
        assert_eq!(V2Error::new(ErrorCode::TestFailed, "[a != b]", 3).to_string(), "Compare failed ([a != b])");
    }
}
