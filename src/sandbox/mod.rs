//! Faithful local emulations of the platforms' REST APIs (placeholder; built in its own branch).
