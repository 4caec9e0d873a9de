//! Which files of a game root are archives to extract, grouped into sets so
//! a multi-volume archive is extracted once, from its first volume.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One archive to extract: its volumes, first volume first.
pub type ArchiveSet = Vec<PathBuf>;

/// Extensions of single-file archives (lower case). `.eti` archives are
/// RAR.
const ARCHIVE_SUFFIXES: &[&str] = &[
    ".eti", ".rar", ".zip", ".7z", ".tar", ".tgz", ".tar.gz", ".tar.xz", ".tar.bz2", ".tar.zst",
];

/// The archive sets among the top-level files of `root` (sorted by name),
/// or the error listing the root.
pub fn archive_sets(root: &Path) -> std::io::Result<Vec<ArchiveSet>> {
    let mut names: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        if entry.file_type()?.is_file()
            && let Ok(name) = entry.file_name().into_string()
        {
            names.push(name);
        }
    }
    names.sort();
    Ok(group(&names)
        .into_iter()
        .map(|set| set.into_iter().map(|name| root.join(name)).collect())
        .collect())
}

/// Groups file names into archive sets.
///
/// - `x.part1.rar`, `x.part2.rar`, … (also `.eti`): one set, ordered by part
///   number;
/// - `x.rar` with `x.r00`, `x.r01`, …: one set, `x.rar` first;
/// - any other name with an archive suffix: a set of its own.
fn group(names: &[String]) -> Vec<Vec<String>> {
    let mut sets: BTreeMap<String, Vec<(u32, String)>> = BTreeMap::new();
    for name in names {
        let lower = name.to_ascii_lowercase();
        if let Some((base, part)) = part_volume(&lower) {
            sets.entry(format!("part:{base}"))
                .or_default()
                .push((part, name.clone()));
        } else if let Some(base) = old_style_volume(&lower) {
            let number = lower[base.len() + 2..].parse::<u32>().unwrap_or(0) + 1;
            sets.entry(format!("old:{base}"))
                .or_default()
                .push((number, name.clone()));
        } else if let Some(base) = lower.strip_suffix(".rar") {
            sets.entry(format!("old:{base}"))
                .or_default()
                .push((0, name.clone()));
        } else if ARCHIVE_SUFFIXES.iter().any(|s| lower.ends_with(s)) {
            sets.entry(format!("one:{lower}"))
                .or_default()
                .push((0, name.clone()));
        }
    }
    sets.into_iter()
        .filter_map(|(key, mut volumes)| {
            volumes.sort();
            // An old-style set needs its `.rar` first volume.
            if key.starts_with("old:") && volumes[0].0 != 0 {
                tracing::warn!(volume = %volumes[0].1, "multi-volume set without its first volume, skipped");
                return None;
            }
            Some(volumes.into_iter().map(|(_, name)| name).collect())
        })
        .collect()
}

/// Whether a top-level file of this name is (a volume of) an archive the
/// install extracts.
pub fn is_archive_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    old_style_volume(&lower).is_some() || ARCHIVE_SUFFIXES.iter().any(|s| lower.ends_with(s))
}

/// `base.partN.rar` / `base.partN.eti` → (base, N).
fn part_volume(lower: &str) -> Option<(&str, u32)> {
    let stem = lower
        .strip_suffix(".rar")
        .or_else(|| lower.strip_suffix(".eti"))?;
    let (base, part) = stem.rsplit_once(".part")?;
    Some((base, part.parse().ok()?))
}

/// `base.r00` … `base.r99` → base.
fn old_style_volume(lower: &str) -> Option<&str> {
    let (base, ext) = lower.rsplit_once('.')?;
    (ext.len() == 3 && ext.starts_with('r') && ext[1..].bytes().all(|b| b.is_ascii_digit()))
        .then_some(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn volumes_group_into_sets_with_the_first_volume_first() {
        let sets = group(&names(&[
            "game.part2.rar",
            "game.part1.rar",
            "game.part10.rar",
            "maps.rar",
            "maps.r00",
            "maps.r01",
            "extra.zip",
            "data.eti",
            "readme.txt",
            "version.ini",
            "orphan.r00",
            "tools.tar.gz",
        ]));
        assert!(sets.contains(&names(&[
            "game.part1.rar",
            "game.part2.rar",
            "game.part10.rar"
        ])));
        assert!(sets.contains(&names(&["maps.rar", "maps.r00", "maps.r01"])));
        assert!(sets.contains(&names(&["extra.zip"])));
        assert!(sets.contains(&names(&["data.eti"])));
        assert!(sets.contains(&names(&["tools.tar.gz"])));
        assert_eq!(sets.len(), 5, "{sets:?}");
    }
}
