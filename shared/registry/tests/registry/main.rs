//! Integration tests of the registry: each test gets its own database and
//! its own server on a free port. `TEST_LOG=1` shows the server's logs.

mod api;
mod auth;
mod client;
mod compatibility;
mod config;
mod contract;
mod helpers;
mod python;
