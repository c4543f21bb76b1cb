//! Path normalization: the one spelling of a path that route matching, authentication, rate
//! limits and the upstream all see, so no request reaches a route by spelling its path
//! differently (`/admin`, `//admin`, `/x/../admin`, `/%61dmin` are one path).
//!
//! In order: percent-encodings are checked (invalid ones refused), those of unreserved
//! characters decoded (RFC 3986 §2.3) and the rest upper-cased; an encoded `/` or `\` is
//! refused (it would be a separator to some upstreams and not to us); runs of slashes merge;
//! dot-segments are removed (RFC 3986 §5.2.4), never above the root.

use std::borrow::Cow;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("the path must start with '/'")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-encoding")]
    InvalidPercent,
    /// `%2F` or `%5C`: an encoded separator.
    #[error("encoded '/' or '\\' in the path")]
    EncodedSeparator,
    /// A raw backslash, control character or non-ASCII byte.
    #[error("a character that is not allowed in a path")]
    BadCharacter,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The normalized path, borrowed when the input was already normal.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // Fast path: nothing to decode, no empty or dot segments.
    let plain = bytes.iter().all(|b| b.is_ascii_graphic() && *b != b'%' && *b != b'\\')
        && !path.contains("//")
        && !path.split('/').any(|s| s == "." || s == "..");
    if plain {
        return Ok(Cow::Borrowed(path));
    }

    // 1. Percent-encodings: decode unreserved, refuse separators, upper-case the rest.
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::InvalidPercent);
                };
                let value = hi << 4 | lo;
                if value == b'/' || value == b'\\' {
                    return Err(PathError::EncodedSeparator);
                }
                if unreserved(value) {
                    decoded.push(value as char);
                } else {
                    decoded.push('%');
                    decoded.push(char::from(b"0123456789ABCDEF"[usize::from(hi)]));
                    decoded.push(char::from(b"0123456789ABCDEF"[usize::from(lo)]));
                }
                i += 3;
            }
            b'\\' => return Err(PathError::BadCharacter),
            _ if !b.is_ascii_graphic() => return Err(PathError::BadCharacter),
            _ => {
                decoded.push(b as char);
                i += 1;
            }
        }
    }

    // 2. Segments: merge slashes, drop `.`, pop on `..` (never above the root).
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || (trailing && !segments.is_empty()) {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn spellings_of_one_path_agree() {
        for spelling in [
            "/admin",
            "//admin",
            "/x/../admin",
            "/%61dmin",
            "/./admin",
            "/x/y/../../admin",
            "/%2e%2e/admin",
            "/../admin",
        ] {
            assert_eq!(normalize(spelling).unwrap(), "/admin", "{spelling}");
        }
        assert_eq!(normalize("/a/b/").unwrap(), "/a/b/");
        assert_eq!(normalize("/a/b/.").unwrap(), "/a/b/");
        assert_eq!(normalize("/a/b/..").unwrap(), "/a/");
        assert_eq!(normalize("/").unwrap(), "/");
        assert_eq!(normalize("/..").unwrap(), "/");
        assert_eq!(normalize("/a%20b").unwrap(), "/a%20b");
        assert_eq!(normalize("/a%3f").unwrap(), "/a%3F");
        assert!(matches!(normalize("/api/v1/products"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn refuses_what_cannot_be_spelled_safely() {
        assert_eq!(normalize("/a%2Fb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/a%2fb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/a%5cb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/a%zz"), Err(PathError::InvalidPercent));
        assert_eq!(normalize("/a%4"), Err(PathError::InvalidPercent));
        assert_eq!(normalize("/a\\b"), Err(PathError::BadCharacter));
        assert_eq!(normalize("/a\u{0}b"), Err(PathError::BadCharacter));
        assert_eq!(normalize("a/b"), Err(PathError::NotAbsolute));
        assert_eq!(normalize(""), Err(PathError::NotAbsolute));
    }

    fn path_strategy() -> impl Strategy<Value = String> {
        let segment = prop_oneof![
            Just(String::new()),
            Just(".".to_owned()),
            Just("..".to_owned()),
            Just("%2e".to_owned()),
            Just("%2E%2e".to_owned()),
            "[a-zA-Z0-9._~-]{1,6}",
            "(%[0-9a-fA-F]{2}){1,2}",
        ];
        proptest::collection::vec(segment, 0..8).prop_map(|segments| format!("/{}", segments.join("/")))
    }

    proptest! {
        #[test]
        fn normal_forms_are_stable_and_clean(path in path_strategy()) {
            if let Ok(once) = normalize(&path) {
                let twice = normalize(&once).unwrap();
                prop_assert_eq!(&twice, &once, "idempotent");
                prop_assert!(once.starts_with('/'));
                prop_assert!(!once.contains("//"), "{}", once);
                prop_assert!(!once.split('/').any(|s| s == "." || s == ".."), "{}", once);
                prop_assert!(!once.contains("%2F") && !once.contains("%5C"));
            }
        }

        #[test]
        fn never_panics_on_any_input(path in "\\PC{0,40}") {
            let _ = normalize(&path);
        }

        #[test]
        fn cannot_climb_out_of_a_prefix_it_does_not_name(rest in path_strategy()) {
            // Whatever follows, a path starting at /public either stays under /public, or
            // climbs out through dot-segments that the normal form no longer contains.
            let path = format!("/public{rest}");
            if let Ok(normal) = normalize(&path) {
                if normal.starts_with("/admin") {
                    prop_assert!(path.contains("..") || path.to_ascii_lowercase().contains("%2e"));
                }
            }
        }
    }
}
