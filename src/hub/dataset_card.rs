//! The `configs:` block of a dataset card (`README.md` YAML front matter), where a dataset names
//! its splits' files when they do not follow the Hub's default naming:
//!
//! ```yaml
//! configs:
//! - config_name: default
//!   data_files:
//!   - split: train
//!     path: data/train-*
//!   - split: test
//!     path: [holdout/a.parquet, holdout/b.parquet]
//! ```
//!
//! Only the first configuration is read (the one `datasets.load_dataset(name)` loads without a
//! config name); `path` is a pattern or a list of them (block or `[flow]` style), with `*`
//! matching within a folder and `**` across folders.

/// The path patterns the card gives `split`, or `None` when it says nothing about it.
pub fn split_patterns(card: &str, split: &str) -> Option<Vec<String>> {
    let front = card.strip_prefix("---")?.split("\n---").next()?;
    let mut lines = front
        .lines()
        .skip_while(|l| l.trim_end() != "configs:")
        .skip(1);
    let mut in_first_config = false;
    let mut current_split: Option<String> = None;
    let mut patterns: Vec<String> = Vec::new();
    let mut in_path_list = false;
    let unquote = |v: &str| v.trim().trim_matches(['"', '\'']).to_string();
    for line in lines.by_ref() {
        if !line.starts_with(' ') && !line.starts_with('-') && !line.trim().is_empty() {
            break; // the next top-level key
        }
        let trimmed = line.trim();
        if line.starts_with("- ") {
            if in_first_config {
                break; // a second configuration
            }
            in_first_config = true;
        }
        let item = trimmed.trim_start_matches("- ").trim();
        if let Some(name) = item.strip_prefix("split:") {
            current_split = Some(unquote(name));
            in_path_list = false;
        } else if let Some(value) = item.strip_prefix("path:") {
            in_path_list = false;
            if current_split.as_deref() != Some(split) {
                continue;
            }
            let value = value.trim();
            if let Some(flow) = value.strip_prefix('[') {
                let flow = flow.trim_end_matches(']');
                patterns.extend(flow.split(',').map(unquote).filter(|p| !p.is_empty()));
            } else if value.is_empty() {
                in_path_list = true;
            } else {
                patterns.push(unquote(value));
            }
        } else if in_path_list
            && trimmed.starts_with("- ")
            && current_split.as_deref() == Some(split)
        {
            patterns.push(unquote(item));
        }
    }
    (!patterns.is_empty()).then_some(patterns)
}

/// Whether `path` matches `pattern` (`*`: any characters but `/`; `**`: any characters).
pub fn matches(pattern: &str, path: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p {
            [] => s.is_empty(),
            [b'*', b'*', rest @ ..] => (0..=s.len()).any(|i| go(rest, &s[i..])),
            [b'*', rest @ ..] => (0..=s.len())
                .take_while(|&i| i == 0 || s[i - 1] != b'/')
                .any(|i| go(rest, &s[i..])),
            [c, rest @ ..] => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    go(pattern.as_bytes(), path.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARD: &str = "---\nlicense: mit\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*\n  - split: test\n    path:\n    - holdout/a.parquet\n    - \"holdout/b.parquet\"\n  - split: dev\n    path: [x/*.jsonl, 'y/**']\n- config_name: other\n  data_files:\n  - split: train\n    path: other/*\ndataset_info:\n  features: []\n---\n# Card\n";

    #[test]
    fn the_first_configs_patterns_per_split() {
        assert_eq!(split_patterns(CARD, "train").unwrap(), ["data/train-*"]);
        assert_eq!(
            split_patterns(CARD, "test").unwrap(),
            ["holdout/a.parquet", "holdout/b.parquet"]
        );
        assert_eq!(split_patterns(CARD, "dev").unwrap(), ["x/*.jsonl", "y/**"]);
        assert_eq!(split_patterns(CARD, "validation"), None);
        assert_eq!(split_patterns("# no front matter", "train"), None);
    }

    #[test]
    fn globs_match_as_the_hub_matches_them() {
        assert!(matches("data/train-*", "data/train-00000-of-00002.parquet"));
        assert!(!matches("data/train-*", "data/sub/train-0.parquet"));
        assert!(matches("y/**", "y/a/b/c.parquet"));
        assert!(matches("holdout/a.parquet", "holdout/a.parquet"));
        assert!(!matches("x/*.jsonl", "x/a.parquet"));
    }
}
