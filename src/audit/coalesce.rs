//! Records → audit events. (Being written.)
