//! A single register, as in Jepsen's etcd test.

use crate::checker::Model;

/// What a client asks of the register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegisterInput {
    /// Read the value.
    Read,
    /// Set the value.
    Write(i64),
    /// Set the value to `new` if it is `expected`.
    Cas {
        /// The value the register must hold.
        expected: i64,
        /// The value to set.
        new: i64,
    },
}

/// What a client is answered. An answer of the wrong kind for its input
/// (say `Written` for a `Read`) is impossible in every state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegisterOutput {
    /// The value read; `None` is Jepsen's `nil`, the value before any write.
    Read(Option<i64>),
    /// The write took effect.
    Written,
    /// Whether the cas took effect; `false` is a definite refusal because
    /// the value differed.
    Cas(bool),
}

/// A register of integers, initially `nil` (`None`).
#[derive(Clone, Copy, Debug, Default)]
pub struct RegisterModel;

impl Model for RegisterModel {
    type State = Option<i64>;
    type Input = RegisterInput;
    type Output = RegisterOutput;

    fn init(&self) -> Option<i64> {
        None
    }

    fn step(&self, state: &Option<i64>, input: &RegisterInput, output: Option<&RegisterOutput>) -> Option<Option<i64>> {
        match (*input, output) {
            (RegisterInput::Read, None) => Some(*state),
            (RegisterInput::Read, Some(RegisterOutput::Read(seen))) => (seen == state).then_some(*state),
            (RegisterInput::Write(v), None | Some(RegisterOutput::Written)) => Some(Some(v)),
            (RegisterInput::Cas { expected, new }, output) => {
                let swaps = *state == Some(expected);
                match output {
                    None => Some(if swaps { Some(new) } else { *state }),
                    Some(RegisterOutput::Cas(true)) => swaps.then_some(Some(new)),
                    Some(RegisterOutput::Cas(false)) => (!swaps).then_some(*state),
                    Some(_) => None,
                }
            }
            _ => None,
        }
    }
}
