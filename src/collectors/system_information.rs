//! The SystemInformation snapshot: what the host is, read under the host root.

use super::{CollectOptions, HostRoot};
use crate::events::Payload;

/// The host's SystemInformation (not collected yet: the reader lands in the next step).
pub fn collect(_host: &HostRoot, _opts: &CollectOptions) -> Vec<Payload> {
    Vec::new()
}
