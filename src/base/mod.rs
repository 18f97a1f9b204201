//! What every stage reads input with: positions and the problems found at them
//! ([`diagnostic`]), YAML and JSON parsed into trees that keep the position of every key and
//! value ([`yaml`]), and validation against JSON Schemas with errors placed at those
//! positions ([`schema`]). Nothing here knows a stage, a platform or a target.

pub mod diagnostic;
pub mod schema;
pub mod yaml;
