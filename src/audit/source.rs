//! Readers of the audit stream. (Being written.)
