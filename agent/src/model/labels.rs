//! The labels selectors see on an endpoint.
//!
//! PLACEHOLDER: being written.
