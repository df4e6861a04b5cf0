//! A workflow file as text: its bytes, lines and spans (`source`), its spanned YAML tree (`yaml`), and where each
//! part of a quoted value was written (`quoted`).

pub mod quoted;
pub mod source;
pub mod yaml;
