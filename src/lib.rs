//! capstan: a declarative GitOps reconciler for PaaS REST APIs.
//!
//! See ARCHITECTURE.md for the bird's-eye view and the code map.

pub mod sandbox;
