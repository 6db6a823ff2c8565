//! Validation of v1 resources, with libcalico-go's rules and messages.
//!
//! PLACEHOLDER: being written.
