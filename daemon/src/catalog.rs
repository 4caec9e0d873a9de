//! The catalog: which game ids this daemon announces and serves, with their
//! display names. A default is compiled in; `--catalog FILE` replaces it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lanspread_proto::model::GameId;
use serde::Deserialize;

/// The catalog compiled into the binary.
const DEFAULT_CATALOG: &str = include_str!("../catalog/default.json");

/// Largest catalog file accepted, in bytes.
const MAX_CATALOG_BYTES: u64 = 16 * 1024 * 1024;

/// One catalog entry. Unknown fields are kept for frontends that read the
/// catalog themselves but play no part in the daemon.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct CatalogEntry {
    pub id: GameId,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub genre: Option<String>,
    #[serde(default)]
    pub max_players: Option<u32>,
}

/// The set of known games, by id.
#[derive(Clone, Debug, PartialEq)]
pub struct Catalog {
    entries: BTreeMap<GameId, CatalogEntry>,
    /// Where it came from: its file, or `(bundled)` (shown by `status`).
    origin: String,
}

/// Why a catalog could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read catalog {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("catalog {} is larger than {MAX_CATALOG_BYTES} bytes", path.display())]
    TooLarge { path: PathBuf },
    #[error("catalog {origin} is not a JSON array of {{\"id\", \"name\", …}} objects")]
    Parse {
        origin: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("catalog {origin} lists game id {id} twice")]
    DuplicateId { origin: String, id: GameId },
}

impl Catalog {
    /// The catalog bundled in the binary.
    pub fn bundled() -> Self {
        Self::parse(DEFAULT_CATALOG, "(bundled)").expect("the bundled catalog is valid")
    }

    /// Loads a catalog file.
    pub fn load(path: &Path) -> Result<Self, CatalogError> {
        let read_error = |source| CatalogError::Read {
            path: path.to_owned(),
            source,
        };
        let len = std::fs::metadata(path).map_err(read_error)?.len();
        if len > MAX_CATALOG_BYTES {
            return Err(CatalogError::TooLarge {
                path: path.to_owned(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_error)?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses catalog JSON; `origin` names it in errors.
    pub fn parse(json: &str, origin: &str) -> Result<Self, CatalogError> {
        let list: Vec<CatalogEntry> =
            serde_json::from_str(json).map_err(|source| CatalogError::Parse {
                origin: origin.to_owned(),
                source,
            })?;
        let mut entries = BTreeMap::new();
        for entry in list {
            let id = entry.id.clone();
            if entries.insert(id.clone(), entry).is_some() {
                return Err(CatalogError::DuplicateId {
                    origin: origin.to_owned(),
                    id,
                });
            }
        }
        Ok(Self {
            entries,
            origin: origin.to_owned(),
        })
    }

    /// Where the catalog came from: its file, or `(bundled)`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Every entry, ordered by id.
    pub fn entries(&self) -> impl Iterator<Item = &CatalogEntry> {
        self.entries.values()
    }

    pub fn get(&self, id: &GameId) -> Option<&CatalogEntry> {
        self.entries.get(id)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_catalog_parses_and_is_not_empty() {
        let catalog = Catalog::bundled();
        assert!(catalog.len() >= 10);
        let openarena = catalog.get(&GameId::new("openarena").unwrap()).unwrap();
        assert_eq!(openarena.name, "OpenArena");
        assert_eq!(openarena.max_players, Some(16));
    }

    #[test]
    fn bad_catalogs_are_refused_with_a_reason() {
        assert!(matches!(
            Catalog::parse(r#"{"id":"x"}"#, "t"),
            Err(CatalogError::Parse { .. })
        ));
        assert!(matches!(
            Catalog::parse(r#"[{"id":"Bad Id","name":"x"}]"#, "t"),
            Err(CatalogError::Parse { .. })
        ));
        assert!(matches!(
            Catalog::parse(r#"[{"id":"a"}]"#, "t"),
            Err(CatalogError::Parse { .. })
        ));
        let dup = Catalog::parse(r#"[{"id":"a","name":"A"},{"id":"a","name":"B"}]"#, "t");
        assert!(matches!(dup, Err(CatalogError::DuplicateId { .. })));
        let extra = Catalog::parse(r#"[{"id":"a","name":"A","publisher":"x"}]"#, "t").unwrap();
        assert_eq!(extra.len(), 1);
    }
}
