//! The audit rules the module needs. (Being written.)
