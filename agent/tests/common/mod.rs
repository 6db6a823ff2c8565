//! Fixtures shared by the integration tests.
#![allow(dead_code)]

pub mod random_world;
pub mod seeds;
