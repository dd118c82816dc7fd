//! The command API against real PostgreSQL and Kafka (`make up`): each test starts the
//! service in-process on a free port with its own database and topics.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod auth;
mod commands_topic;
mod helpers;
mod idempotency;
mod lifecycle;
mod limits;
mod problems;
mod secrets;
