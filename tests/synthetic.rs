//! The synthetic ends (`gen://`, `null://`) through the real binary, staging and drain.

mod common;

use common::*;

#[test]
fn a_generated_source_moves_whole_into_a_directory_and_through_null() {
    let t = tmp();
    let state = t.path().join("state");
    init_small(&state, &[]);
    let url = "gen://?objects=3000&size=0-20KiB&dup=0.2&seed=42";
    let out = t.path().join("out");
    let o = barge(
        &state,
        &[
            "--json",
            "migrate",
            "--source",
            url,
            "--dest",
            out.to_str().unwrap(),
        ],
    );
    let text = ok(&o);
    assert_eq!(json_doc(&text, "report")["report"]["done"], true, "{text}");
    let files = files_under(&out);
    assert_eq!(files.len(), 3000, "every generated object is a file");
    // Duplicates share bytes: fewer distinct contents than objects.
    let distinct: std::collections::HashSet<Vec<u8>> =
        files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(
        distinct.len() < 2700,
        "{} distinct of 3000 at dup=0.2",
        distinct.len()
    );

    // The same source into null://: drained, checked, nothing kept, no verify.
    let state2 = t.path().join("state2");
    init_small(&state2, &[]);
    let o = barge(&state2, &["migrate", "--source", url, "--dest", "null://"]);
    let text = ok(&o);
    assert!(text.contains("3000 objects"), "{text}");
    assert!(text.contains("verify: skipped"), "{text}");

    // A bad URL is refused by the parameter's name.
    let o = barge(
        &state2,
        &[
            "migrate",
            "--source",
            "gen://?objects=10&dup=5",
            "--dest",
            "null://",
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("dup=5"), "{}", stderr(&o));
}
