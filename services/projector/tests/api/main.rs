//! The projector against real PostgreSQL and Kafka (`make up`): each test has its own
//! database and topics, produces order events itself and runs the projector in-process
//! on a free port (or, for the crash test, as a child process).
#![allow(clippy::unwrap_used, unreachable_pub)]

mod auth;
mod crash;
mod gaps;
mod helpers;
mod projection;
mod queries;
mod rebuild;
mod windows;
