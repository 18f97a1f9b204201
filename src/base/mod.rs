//! What every stage reads input with: positions and the problems found at them
//! ([`diagnostic`]), YAML and JSON parsed into trees that keep the position of every key and
//! value ([`yaml`]), and validation against JSON Schemas with errors placed at those
//! positions ([`schema`]), and `%XX` escapes undone ([`percent_decode`]: URLs capstan is
//! given). Nothing here knows a stage, a platform or a target.

pub mod diagnostic;
pub mod schema;
pub mod yaml;

/// `%XX` escapes decoded (as a URL's userinfo and query are written); anything else, a `%`
/// not followed by two hex digits among it, kept as it is.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
