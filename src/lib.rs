//! Integration tests and examples for kiln (no library code).

/// `docs/pitfalls.md`: its Rust snippets run as doctests, so the messages it shows stay true.
/// (Here, not in kiln-train: a published crate cannot include files from outside its folder.)
#[cfg(doctest)]
#[doc = include_str!("../docs/pitfalls.md")]
pub struct PitfallsGuide;
