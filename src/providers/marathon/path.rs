//! Marathon ids: slash-separated paths, absolute (`/product/backend/api`) or relative to the
//! group they are written in (`api`, `../backend`), as seed 004 uses them (L724-743, L1034).

/// Resolve `id` against the absolute group path `base` (`/` for the root): absolute ids stand
/// as they are, `.` and `..` segments are followed. Err when `..` climbs above the root.
pub fn resolve(base: &str, id: &str) -> Result<String, String> {
    let mut segments: Vec<&str> =
        if id.starts_with('/') { Vec::new() } else { base.split('/').filter(|s| !s.is_empty()).collect() };
    for seg in id.split('/').filter(|s| !s.is_empty()) {
        match seg {
            "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(format!("{id:?} climbs above the root group from {base:?}"));
                }
            }
            s => segments.push(s),
        }
    }
    Ok(format!("/{}", segments.join("/")))
}

/// The group an absolute id lives in (`/a/b` → `/a`, `/a` → `/`).
pub fn parent(id: &str) -> &str {
    match id.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &id[..i],
    }
}

/// Every group above an absolute id, nearest first, the root excluded.
pub fn ancestors(id: &str) -> impl Iterator<Item = &str> {
    let mut cur = id;
    std::iter::from_fn(move || {
        let p = parent(cur);
        if p == "/" || p == cur {
            return None;
        }
        cur = p;
        Some(p)
    })
}

/// Whether `id` is `group` or lies below it.
pub fn within(id: &str, group: &str) -> bool {
    group == "/" || id == group || id.strip_prefix(group).is_some_and(|rest| rest.starts_with('/'))
}

/// Check the segments of an absolute id against Marathon's id rule: lower-case letters, digits,
/// `-` and `.`, not starting or ending with `-` or `.`.
pub fn check(id: &str) -> Result<(), String> {
    if id == "/" {
        return Ok(());
    }
    for seg in id.split('/').skip(1) {
        let ok = !seg.is_empty()
            && seg.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !seg.starts_with(['-', '.'])
            && !seg.ends_with(['-', '.']);
        if !ok {
            return Err(format!(
                "{id:?} is not a valid Marathon id: each segment must be lower-case letters, digits, '-' and '.', not starting or ending with '-' or '.'"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_ids_resolve_against_their_group() {
        assert_eq!(resolve("/product/service/us-east", "app1").unwrap(), "/product/service/us-east/app1");
        assert_eq!(resolve("/product/service", "../backend").unwrap(), "/product/backend");
        assert_eq!(resolve("/product", "/product/database").unwrap(), "/product/database");
        assert_eq!(resolve("/", "my-app").unwrap(), "/my-app");
        assert_eq!(resolve("/a", "./b/").unwrap(), "/a/b");
        assert!(resolve("/", "../x").is_err());
    }

    #[test]
    fn parents_and_ancestors() {
        assert_eq!(parent("/a/b/c"), "/a/b");
        assert_eq!(parent("/a"), "/");
        assert_eq!(ancestors("/a/b/c").collect::<Vec<_>>(), vec!["/a/b", "/a"]);
        assert!(within("/a/b", "/a") && within("/a", "/a") && !within("/ab", "/a") && within("/x", "/"));
    }

    #[test]
    fn id_segments_follow_marathons_rule() {
        assert!(check("/product/us-east/app1").is_ok());
        assert!(check("/a.b/c").is_ok());
        assert!(check("/Product").is_err());
        assert!(check("/a/-b").is_err());
        assert!(check("/a//b").is_err());
        assert!(check("/a_b").is_err());
    }
}
