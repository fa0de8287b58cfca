//! Security events derived from audit events. (Being written.)
