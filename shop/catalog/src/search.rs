//! Full-text search over name, description and category: FTS5 on SQLite (an external-content
//! index kept in step by triggers), a GIN-indexed `tsvector` on PostgreSQL. Both use the
//! `simple` rules (no stemming) and prefix matching on every word, and rank by relevance.
//! The search text never reaches SQL as SQL: it is cut into words of letters and digits,
//! which are bound as a parameter in each engine's query syntax.

use flotilla::store::{Engine, Store};

/// Words a query may have at most.
const MAX_WORDS: usize = 8;
/// Characters a word may have at most.
const MAX_WORD: usize = 32;

/// Creates the search index if it is missing (SQLite: and fills it).
pub(crate) async fn prepare(store: &Store) -> Result<(), sqlx::Error> {
    match store.engine() {
        Engine::Sqlite => {
            let exists: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'products_fts'")
                    .fetch_one(store.pool())
                    .await?;
            if exists == 0 {
                for statement in [
                    "CREATE VIRTUAL TABLE products_fts USING fts5(name, description, category, content='products', content_rowid='id')",
                    "CREATE TRIGGER products_fts_insert AFTER INSERT ON products BEGIN \
                       INSERT INTO products_fts (rowid, name, description, category) VALUES (new.id, new.name, new.description, new.category); END",
                    "CREATE TRIGGER products_fts_delete AFTER DELETE ON products BEGIN \
                       INSERT INTO products_fts (products_fts, rowid, name, description, category) VALUES ('delete', old.id, old.name, old.description, old.category); END",
                    "CREATE TRIGGER products_fts_update AFTER UPDATE ON products BEGIN \
                       INSERT INTO products_fts (products_fts, rowid, name, description, category) VALUES ('delete', old.id, old.name, old.description, old.category); \
                       INSERT INTO products_fts (rowid, name, description, category) VALUES (new.id, new.name, new.description, new.category); END",
                    "INSERT INTO products_fts (products_fts) VALUES ('rebuild')",
                ] {
                    sqlx::query(statement).execute(store.pool()).await?;
                }
            }
        }
        Engine::Postgres => {
            sqlx::query(
                "CREATE INDEX IF NOT EXISTS products_search ON products USING GIN \
                 (to_tsvector('simple', name || ' ' || description || ' ' || category))",
            )
            .execute(store.pool())
            .await?;
        }
    }
    Ok(())
}

/// The words of a search text, or why there are none usable.
pub(crate) fn words(text: &str) -> Result<Vec<String>, String> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.chars().take(MAX_WORD).collect::<String>().to_lowercase())
        .collect();
    if words.is_empty() {
        return Err("has no words to search for (letters or digits)".into());
    }
    if words.len() > MAX_WORDS {
        return Err(format!("has more than {MAX_WORDS} words"));
    }
    Ok(words)
}

/// A search as SQL for the store's engine: the `FROM … WHERE` part (the search text is `$1`,
/// the category, if any, `$2`), the ranking `ORDER BY`, and the text to bind as `$1`.
pub(crate) struct Search {
    /// `FROM … WHERE …`.
    pub(crate) from_where: &'static str,
    /// `ORDER BY …`.
    pub(crate) order: &'static str,
    /// What to bind as `$1`.
    pub(crate) query: String,
}

/// Builds the search for `words` on `engine`, with or without a category filter.
pub(crate) fn search(engine: Engine, words: &[String], with_category: bool) -> Search {
    match (engine, with_category) {
        (Engine::Sqlite, category) => Search {
            from_where: if category {
                "FROM products JOIN products_fts ON products_fts.rowid = products.id WHERE products_fts MATCH $1 AND products.category = $2"
            } else {
                "FROM products JOIN products_fts ON products_fts.rowid = products.id WHERE products_fts MATCH $1"
            },
            order: "ORDER BY products_fts.rank, products.id",
            // Each word quoted (a quote inside doubled), as a prefix: `"rust"* "book"*`.
            query: words
                .iter()
                .map(|w| format!("\"{}\"*", w.replace('"', "\"\"")))
                .collect::<Vec<_>>()
                .join(" "),
        },
        (Engine::Postgres, category) => Search {
            from_where: if category {
                "FROM products WHERE to_tsvector('simple', name || ' ' || description || ' ' || category) @@ to_tsquery('simple', $1) AND category = $2"
            } else {
                "FROM products WHERE to_tsvector('simple', name || ' ' || description || ' ' || category) @@ to_tsquery('simple', $1)"
            },
            order: "ORDER BY ts_rank(to_tsvector('simple', name || ' ' || description || ' ' || category), to_tsquery('simple', $1)) DESC, id",
            // Words are letters and digits only, so `word:*` joined by `&` is a valid tsquery.
            query: words.iter().map(|w| format!("{w}:*")).collect::<Vec<_>>().join(" & "),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_text_becomes_words_never_syntax() {
        assert_eq!(words("Rust  programming!").unwrap(), vec!["rust", "programming"]);
        assert_eq!(
            words("\"; DROP TABLE products; --").unwrap(),
            vec!["drop", "table", "products"]
        );
        assert!(words("  -- ** ").is_err());
        assert!(words("a b c d e f g h i").is_err());
        let q = search(Engine::Sqlite, &["rust".into(), "book".into()], false).query;
        assert_eq!(q, "\"rust\"* \"book\"*");
        let q = search(Engine::Postgres, &["rust".into(), "book".into()], true).query;
        assert_eq!(q, "rust:* & book:*");
    }
}
