//! The reference evaluator.
//!
//! PLACEHOLDER: being written.
