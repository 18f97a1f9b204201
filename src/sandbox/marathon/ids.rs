//! Ids and times: app and group ids are paths (resolved against their group, each segment
//! checked against Marathon's pattern), versions are ISO-8601 UTC with milliseconds, and
//! deployments and tasks get uuids. Plain functions over strings, used by every other module.

/// The message of an id segment that does not match Marathon's pattern.
pub const ID_PATTERN: &str = "must fully match regular expression '^(([a-z0-9]|[a-z0-9][a-z0-9\\-]*[a-z0-9])\\.)*([a-z0-9]|[a-z0-9][a-z0-9\\-]*[a-z0-9])|(\\.|\\.\\.)$'";

/// One id segment: dot-separated labels of lower-case letters, digits and inner dashes.
pub fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

/// An id resolved against the absolute group `base`: `.` and `..` are followed, empty
/// segments skipped; the result is absolute without a trailing slash (`/` for the root).
pub fn resolve(base: &str, id: &str) -> Result<String, String> {
    let mut segments: Vec<&str> = Vec::new();
    if !id.starts_with('/') {
        segments.extend(base.split('/').filter(|s| !s.is_empty()));
    }
    for s in id.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(format!("{id:?} goes above the root group"));
                }
            }
            s if valid_segment(s) => segments.push(s),
            _ => return Err(ID_PATTERN.to_string()),
        }
    }
    Ok(format!("/{}", segments.join("/")))
}

/// The group an absolute id is in (`/` for a top-level id and for `/` itself).
pub fn parent(id: &str) -> &str {
    match id.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &id[..i],
    }
}

/// Whether `id` is `group` or below it.
pub fn is_under(id: &str, group: &str) -> bool {
    group == "/" || id == group || (id.starts_with(group) && id.as_bytes().get(group.len()) == Some(&b'/'))
}

/// Every group from `id`'s parent up to the root.
pub fn ancestors(id: &str) -> impl Iterator<Item = &str> {
    let mut cur = Some(id);
    std::iter::from_fn(move || {
        let c = cur?;
        if c == "/" {
            cur = None;
            return None;
        }
        let p = parent(c);
        cur = Some(p);
        Some(p)
    })
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// `2014-03-01T23:17:50.295Z` (computed directly: task lists format thousands of these).
pub fn iso(ms: u64) -> String {
    let (secs, millis) = (ms / 1000, ms % 1000);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_resolve_against_their_group() {
        assert_eq!(resolve("/product/service", "../backend").unwrap(), "/product/backend");
        assert_eq!(resolve("/", "my-app").unwrap(), "/my-app");
        assert_eq!(resolve("/a", "/x/y/").unwrap(), "/x/y");
        assert_eq!(resolve("/a/b", "./c").unwrap(), "/a/b/c");
        assert!(resolve("/", "../x").is_err());
        assert!(resolve("/", "My-App").is_err());
        assert!(resolve("/", "a_b").is_err());
        assert!(resolve("/", "-a").is_err());
        assert!(valid_segment("a.b-c.d1"));
        assert!(!valid_segment("a..b"));
    }

    #[test]
    fn paths_and_parents() {
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
        assert_eq!(ancestors("/a/b/c").collect::<Vec<_>>(), ["/a/b", "/a", "/"]);
        assert!(is_under("/a/b", "/a"));
        assert!(!is_under("/ab", "/a"));
        assert!(is_under("/x", "/"));
    }
}
