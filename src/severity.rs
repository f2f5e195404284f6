//! How bad a check's state is: the one type the checks measure, the catalog stores and
//! alerts act on. Imports nothing from the crate.

use serde::{Deserialize, Serialize};

/// How bad a reading is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    Ok,
    Warn,
    Crit,
}

impl Severity {
    /// One letter, for the history kept in the catalog.
    pub fn letter(self) -> char {
        match self {
            Severity::Ok => 'O',
            Severity::Warn => 'W',
            Severity::Crit => 'C',
        }
    }
    pub fn from_letter(c: char) -> Severity {
        match c {
            'W' => Severity::Warn,
            'C' => Severity::Crit,
            _ => Severity::Ok,
        }
    }
    /// Nagios-style word.
    pub fn word(self) -> &'static str {
        match self {
            Severity::Ok => "OK",
            Severity::Warn => "WARNING",
            Severity::Crit => "CRITICAL",
        }
    }
}
