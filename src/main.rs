//! Placeholder until the `starling` program lands; replaced by src/cli.
fn main() {}
