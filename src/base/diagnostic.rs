//! Errors and warnings about the user's input, each tied to a place in a file.
//!
//! Every problem capstan finds in manifests is a [`Diagnostic`]: a severity, a message that says
//! what was found and what was expected, and the file:line:column where it is. They are
//! collected rather than returned one at a time, so a user sees every problem of a commit at once.

use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// A position in a source file. Lines and columns are 1-based, as editors show them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl Location {
    pub fn new(file: impl Into<PathBuf>, line: usize, column: usize) -> Self {
        Location { file: file.into(), line, column }
    }

    /// The start of a file, for problems that concern the file as a whole.
    pub fn file_start(file: impl AsRef<Path>) -> Self {
        Location::new(file.as_ref(), 1, 1)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in the input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub location: Option<Location>,
    pub message: String,
    /// A second place the problem involves, such as the first declaration of a duplicate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub related: Option<Box<(Location, String)>>,
}

impl Diagnostic {
    pub fn error(location: Option<Location>, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Error, location, message: message.into(), related: None }
    }

    pub fn warning(location: Option<Location>, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Warning, location, message: message.into(), related: None }
    }

    pub fn error_at(location: Location, message: impl Into<String>) -> Self {
        Self::error(Some(location), message)
    }

    pub fn with_related(mut self, location: Location, note: impl Into<String>) -> Self {
        self.related = Some(Box::new((location, note.into())));
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match &self.location {
            Some(loc) => write!(f, "{loc}: {label}: {}", self.message)?,
            None => write!(f, "{label}: {}", self.message)?,
        }
        if let Some(related) = &self.related {
            let (loc, note) = related.as_ref();
            write!(f, "\n  {loc}: note: {note}")?;
        }
        Ok(())
    }
}

/// The problems found in one run: errors stop everything, warnings are reported and carried on.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    pub fn extend(&mut self, other: impl IntoIterator<Item = Diagnostic>) {
        self.0.extend(other);
    }

    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.is_error())
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| !d.is_error())
    }

    /// Errors first, then by place, so output is stable from run to run.
    pub fn sort(&mut self) {
        self.0.sort_by(|a, b| (a.severity, &a.location, &a.message).cmp(&(b.severity, &b.location, &b.message)));
        self.0.dedup();
    }
}

/// The error a command returns when the input has problems: all of them, already sorted.
#[derive(Debug, thiserror::Error)]
#[error("{} error(s) in the manifests", self.0.errors().count())]
pub struct InvalidInput(pub Diagnostics);
