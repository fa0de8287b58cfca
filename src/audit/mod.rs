//! The audit path: read auditd's stream, parse records, coalesce them into events, decode
//! the values the kernel encodes.
//!
//! Imports run one way, along the data path: `decimal`, `types` and `syscalls` at the
//! bottom, `parse` above them, then `decode`, `coalesce` and `source` above `parse`; none of
//! these imports another of the same level.

pub mod coalesce;
pub mod decimal;
pub mod decode;
pub mod parse;
pub mod source;
pub mod syscalls;
pub mod types;

#[cfg(test)]
mod tests {
    /// The code lines of a source file (comments left out: a doc link may point anywhere).
    fn code(src: &'static str) -> impl Iterator<Item = &'static str> {
        src.lines().filter(|l| !l.trim_start().starts_with("//"))
    }

    /// The modules `src` reaches into, of those named in `names`.
    fn reaches(src: &'static str, names: &[&'static str]) -> Vec<&'static str> {
        let mut found: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| code(src).any(|l| l.contains(&format!("{n}::"))))
            .collect();
        found.sort_unstable();
        found
    }

    #[test]
    fn imports_run_one_way_along_the_data_path() {
        let above_parse = ["decode", "coalesce", "source"];
        let above_bottom = ["parse", "decode", "coalesce", "source"];
        for (name, src) in [
            ("decimal", include_str!("decimal.rs")),
            ("types", include_str!("types.rs")),
            ("syscalls", include_str!("syscalls.rs")),
        ] {
            assert_eq!(reaches(src, &above_bottom), Vec::<&str>::new(), "{name}");
        }
        assert_eq!(
            reaches(include_str!("parse.rs"), &above_parse),
            Vec::<&str>::new()
        );
        // The layers above do use the ones below.
        assert_eq!(
            reaches(include_str!("parse.rs"), &["decimal", "types"]),
            ["decimal", "types"]
        );
        assert_eq!(reaches(include_str!("types.rs"), &["decimal"]), ["decimal"]);
    }
}
