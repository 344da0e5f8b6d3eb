//! Every link in README.md and docs/*.md resolves: a relative link names a file of the
//! repository, and a `#fragment` names a heading of its target (GitHub's anchor rules).
//! Links to other sites are not followed (CI has no network).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The markdown files that are checked.
fn documents() -> Vec<PathBuf> {
    let root = repo_root();
    let mut docs = vec![root.join("README.md"), root.join("CHANGELOG.md")];
    let mut dir: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    dir.sort();
    docs.extend(dir);
    docs
}

/// The lines outside fenced code blocks, with their numbers (links inside code are examples).
fn prose(text: &str) -> Vec<(usize, &str)> {
    let mut inside = false;
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            if l.trim_start().starts_with("```") {
                inside = !inside;
                return false;
            }
            !inside
        })
        .map(|(i, l)| (i + 1, l))
        .collect()
}

/// GitHub's anchor of a heading: lower case, punctuation dropped (but `-` and `_`), spaces to
/// `-`; a repeated heading gets `-1`, `-2`, ….
fn anchors(text: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    for (_, line) in prose(text) {
        let Some(title) = line.strip_prefix('#') else {
            continue;
        };
        let title = title.trim_start_matches('#').trim();
        let base: String = title
            .chars()
            .flat_map(char::to_lowercase)
            .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut anchor = base.clone();
        let mut n = 0;
        while !seen.insert(anchor.clone()) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
    }
    seen
}

/// The targets of the inline links `[text](target)` and images `![alt](target)` of a line,
/// outside inline code.
fn link_targets(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_code = false;
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'`' => in_code = !in_code,
            b']' if !in_code && bytes.get(i + 1) == Some(&b'(') => {
                if let Some(end) = line[i + 2..].find(')') {
                    let target = line[i + 2..i + 2 + end].trim();
                    // `[a](b "title")`: the target is the first word.
                    let target = target.split_whitespace().next().unwrap_or("");
                    out.push(target.to_string());
                    i += 2 + end;
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

#[test]
fn every_link_in_the_documentation_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).expect("readable document");
        let dir = doc.parent().expect("a document has a folder");
        for (n, line) in prose(&text) {
            for target in link_targets(line) {
                if target.contains("://") || target.starts_with("mailto:") || target.is_empty() {
                    continue;
                }
                checked += 1;
                let (file, fragment) = match target.split_once('#') {
                    Some((f, frag)) => (f, Some(frag)),
                    None => (target.as_str(), None),
                };
                let path = if file.is_empty() {
                    doc.clone()
                } else {
                    dir.join(file)
                };
                let name = doc.strip_prefix(repo_root()).unwrap_or(&doc).display();
                if !path.exists() {
                    broken.push(format!("{name}, line {n}: no file {target}"));
                    continue;
                }
                if let Some(fragment) = fragment {
                    let target_text = std::fs::read_to_string(&path).unwrap_or_default();
                    if !anchors(&target_text).contains(fragment) {
                        broken.push(format!(
                            "{name}, line {n}: no heading #{fragment} in {}",
                            path.strip_prefix(repo_root()).unwrap_or(&path).display()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} links found: the scanner is broken"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_anchor_rules_follow_github() {
    let a = anchors(
        "# Groups (tenants): fair share and limits per group\n## `rediq web`\n## Same\n## Same\n",
    );
    assert!(
        a.contains("groups-tenants-fair-share-and-limits-per-group"),
        "{a:?}"
    );
    assert!(a.contains("rediq-web"), "{a:?}");
    assert!(a.contains("same") && a.contains("same-1"), "{a:?}");
    assert_eq!(
        link_targets("see [a](x.md#b) and `[c](d)` and ![i](img.png \"t\")"),
        vec!["x.md#b", "img.png"]
    );
}
