//! Integration tests and examples for kiln (no library code).
