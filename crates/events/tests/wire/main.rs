//! Wire tests of the contract: round trips, pinned bytes, bad input.
#![allow(clippy::unwrap_used)]

mod bad_input;
mod fixtures;
mod golden;
mod roundtrip;
