//! The audit rules the module needs, in `auditctl -R` format. (Being written.)

/// An audit ABI the rules are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    I386,
    Aarch64,
    Arm,
}

impl Arch {
    /// From `uname -m` text (`x86_64`, `i686`, `aarch64`, `armv7l` …).
    pub fn from_uname(_machine: &str) -> Option<Arch> {
        None
    }
}

/// The rules text for a machine of this architecture.
pub fn render(_arch: Arch) -> String {
    String::new()
}
