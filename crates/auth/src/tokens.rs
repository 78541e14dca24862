//! etcd's simple tokens (`--auth-token simple`): an opaque string naming a
//! user, valid for `--auth-token-ttl` after its last use.
//!
//! A token is `<16 random letters>.<raft index of the Authenticate entry>`:
//! the letters are drawn once, before the request is proposed, so every
//! member that applies it hands out the same token. A simple token carries
//! no auth revision (a JWT does); instead the tokens of a user who is
//! deleted or changes password are dropped at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::error::AuthError;

/// etcd's default `--auth-token-ttl`.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(300);

/// Letters in a token's random part.
pub const RANDOM_LETTERS: usize = 16;

#[derive(Debug)]
pub struct SimpleTokens {
    ttl: Duration,
    /// Token -> (user, expiry).
    tokens: HashMap<String, (String, Instant)>,
}

impl SimpleTokens {
    pub fn new(ttl: Duration) -> SimpleTokens {
        SimpleTokens { ttl, tokens: HashMap::new() }
    }

    /// A random part for a token, from `letter`, a source of indexes into
    /// the 52 letters (the caller's random numbers: this crate draws none).
    pub fn random_part(mut letter: impl FnMut() -> usize) -> String {
        const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        (0..RANDOM_LETTERS).map(|_| LETTERS[letter() % LETTERS.len()] as char).collect()
    }

    /// Hands `user` the token made of `random` and the raft `index` that
    /// authenticated it.
    pub fn assign(&mut self, user: &str, random: &str, index: u64, now: Instant) -> String {
        let token = format!("{random}.{index}");
        self.tokens.insert(token.clone(), (user.to_owned(), now + self.ttl));
        token
    }

    /// The user `token` names, if it is live; using it starts its TTL over.
    pub fn user_of(&mut self, token: &str, now: Instant) -> Result<String, AuthError> {
        match self.tokens.get_mut(token) {
            Some((user, expiry)) if *expiry > now => {
                *expiry = now + self.ttl;
                Ok(user.clone())
            }
            _ => Err(AuthError::InvalidAuthToken),
        }
    }

    /// Drops every token of `user` (deleted, or a new password).
    pub fn invalidate_user(&mut self, user: &str) {
        self.tokens.retain(|_, (owner, _)| owner != user);
    }

    /// Drops the tokens whose TTL ran out.
    pub fn expire(&mut self, now: Instant) {
        self.tokens.retain(|_, (_, expiry)| *expiry > now);
    }

    /// Drops every token (auth disabled).
    pub fn clear(&mut self) {
        self.tokens.clear();
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_user_until_unused_for_a_ttl() {
        let start = Instant::now();
        let ttl = Duration::from_secs(300);
        let mut tokens = SimpleTokens::new(ttl);
        let mut n = 0;
        let random = SimpleTokens::random_part(|| {
            n += 7;
            n
        });
        assert_eq!(random.len(), RANDOM_LETTERS);
        assert!(random.bytes().all(|b| b.is_ascii_alphabetic()));
        let token = tokens.assign("alice", &random, 42, start);
        assert_eq!(token, format!("{random}.42"));
        // Each use starts the TTL over.
        let used = start + Duration::from_secs(200);
        assert_eq!(tokens.user_of(&token, used).unwrap(), "alice");
        assert_eq!(tokens.user_of(&token, used + Duration::from_secs(299)).unwrap(), "alice");
        let late = used + Duration::from_secs(299) + ttl;
        assert_eq!(tokens.user_of(&token, late), Err(AuthError::InvalidAuthToken));
        tokens.expire(late);
        assert!(tokens.is_empty());
        assert_eq!(tokens.user_of("forged.1", start), Err(AuthError::InvalidAuthToken));
    }

    #[test]
    fn a_users_tokens_go_when_it_is_deleted_or_changes_password() {
        let now = Instant::now();
        let mut tokens = SimpleTokens::new(DEFAULT_TOKEN_TTL);
        let alice = tokens.assign("alice", "aaaaaaaaaaaaaaaa", 1, now);
        let again = tokens.assign("alice", "bbbbbbbbbbbbbbbb", 2, now);
        let bob = tokens.assign("bob", "cccccccccccccccc", 3, now);
        tokens.invalidate_user("alice");
        assert_eq!(tokens.user_of(&alice, now), Err(AuthError::InvalidAuthToken));
        assert_eq!(tokens.user_of(&again, now), Err(AuthError::InvalidAuthToken));
        assert_eq!(tokens.user_of(&bob, now).unwrap(), "bob");
        tokens.clear();
        assert_eq!(tokens.len(), 0);
    }
}
