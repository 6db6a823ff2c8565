//! Helpers for palisade's end-to-end tests.
