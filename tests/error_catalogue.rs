//! Every `error_id` the module logs is in the README's error catalogue, and every id there
//! is one the module logs.

mod support;

use std::collections::BTreeSet;

fn ids_in_source(dir: &std::path::Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            ids_in_source(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for part in text.split("error_id = \"").skip(1) {
                if let Some(id) = part.split('"').next() {
                    out.insert(id.to_owned());
                }
            }
        }
    }
}

#[test]
fn the_readme_catalogue_lists_every_logged_error_id_and_no_other() {
    let mut logged = BTreeSet::new();
    ids_in_source(&support::root().join("src"), &mut logged);
    assert!(logged.len() >= 20, "{logged:?}");
    let readme = std::fs::read_to_string(support::root().join("README.md")).unwrap();
    let listed: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| "))
        .filter_map(|l| l.split(" |").next())
        .filter(|id| id.starts_with("E-") || id.starts_with("W-"))
        .map(str::to_owned)
        .collect();
    assert_eq!(logged, listed);
}
