//! The LocalUsers snapshot: the host's accounts, read under the host root.

use super::{CollectOptions, HostRoot};
use crate::events::Payload;

/// The host's LocalUsers (not collected yet: the reader lands in the next step).
pub fn collect(_host: &HostRoot, _opts: &CollectOptions) -> Vec<Payload> {
    Vec::new()
}
