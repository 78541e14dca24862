//! `keel-auth`: etcd's auth store as a pure state machine. Users, roles and
//! their key-range permissions, the management operations with etcd's rules
//! and error strings, and the permission checks every request passes.
//!
//! Nothing here touches gRPC, raft or disk: the server applies committed
//! auth requests to an [`AuthState`] and persists what it returns, and
//! checks requests against the state in memory, so a check never waits on
//! storage. Passwords arrive hashed: hashing is the caller's (etcd hashes
//! before proposing, so raft never carries a plaintext password).

mod error;
mod jwt;
mod password;
mod range;
mod requests;
mod state;
mod tokens;

pub use error::AuthError;
pub use jwt::{JwtOptions, JwtTokens, TokenConfigError, TokenSpec, DEFAULT_JWT_TTL};
pub use password::{hash_password, password_matches, DEFAULT_BCRYPT_COST, MAX_BCRYPT_COST, MIN_BCRYPT_COST};
pub use range::{KeyRange, RangeSet};
pub use requests::AuthInfo;
pub use state::{Access, AuthState, ROOT_ROLE, ROOT_USER};
pub use tokens::{SimpleTokens, DEFAULT_TOKEN_TTL, RANDOM_LETTERS};
