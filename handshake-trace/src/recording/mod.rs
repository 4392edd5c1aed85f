//! Trace files: the format `record` writes and `analyze` reads, and the redactor
//! that zeroes secrets before anything reaches the file.
pub mod format;
pub mod recorder;
pub mod redact;
