//! Fixtures shared by the integration tests.
#![allow(dead_code)]

pub mod generated;
pub mod random_world;
pub mod seeds;
