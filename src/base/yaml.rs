//! A YAML (and JSON) document as a tree in which every key and every value knows its place.
//!
//! serde-based YAML crates lose the position of a value once it is deserialised, and capstan must
//! name file:line:column for problems found long after parsing (a schema violation, a duplicate
//! identity across files, a dangling reference). So manifests are parsed with `saphyr` into
//! [`Node`]s that keep the position of every key and value; variable expansion rewrites this tree
//! in place, and only then is it turned into a `serde_json::Value` for schema checks and decoding.
//! JSON files go through the same parser (JSON is YAML's flow style), so both carry positions.

use crate::base::diagnostic::{Diagnostic, Location};
use saphyr::Scalar as SaphyrScalar;
use saphyr_parser::{Event, Parser, ScalarStyle};
use serde_json::{Map, Number, Value};
use std::path::Path;
use std::sync::Arc;

/// Where a node starts: 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

/// How a string scalar was written; expansion uses it to place errors inside the text and to
/// decide whether a substituted plain scalar is re-typed (`replicas: ${N}` becomes a number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Plain,
    Quoted,
    Block,
    /// A plain scalar that was exactly one `${VAR}` reference; typed later by the schema.
    Substituted,
}

#[derive(Clone, Debug, PartialEq)]
pub enum NodeValue {
    Null,
    Bool(bool),
    Number(Number),
    Str(String, Style),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: NodeValue,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub key_style: Style,
    pub value: Node,
}

/// One document of one file, with the file it came from.
#[derive(Clone, Debug)]
pub struct Document {
    pub file: Arc<Path>,
    /// 0-based index of the document inside a multi-document file.
    pub index: usize,
    pub root: Node,
}

impl Document {
    pub fn location(&self, pos: Pos) -> Location {
        Location::new(self.file.to_path_buf(), pos.line as usize, pos.column as usize)
    }

    /// The place of the value at a JSON pointer, or of its nearest existing ancestor.
    pub fn locate(&self, pointer: &str) -> Location {
        self.location(self.root.locate(pointer))
    }

    /// The place of the key `key` inside the mapping at `pointer` (for "unknown field" errors).
    pub fn locate_key(&self, pointer: &str, key: &str) -> Location {
        let parent = self.root.find(pointer);
        let pos = match parent.map(|n| &n.value) {
            Some(NodeValue::Map(entries)) => {
                entries.iter().find(|e| e.key == key).map(|e| e.key_pos).unwrap_or(parent.unwrap().pos)
            }
            _ => self.root.locate(pointer),
        };
        self.location(pos)
    }
}

/// The most one manifest file (or capstan.yaml, or a template's output) may hold.
pub const MAX_FILE_BYTES: usize = 16 << 20;

/// How deep mappings and sequences may nest: far beyond any manifest, and shallow enough that
/// every recursive walk over a document (expansion, schema validation, JSON, redaction, diffs,
/// a plan's JSON read back by serde_json, whose own limit is 128) is safe on any thread's stack.
pub const MAX_DEPTH: usize = 64;

/// What aliases may copy into one file: nodes, and bytes of keys and scalars, so that neither
/// a "billion laughs" of small nodes nor a few copies of one huge string can exhaust memory.
pub const MAX_ALIAS_NODES: usize = 100_000;
pub const MAX_ALIAS_BYTES: usize = 16 << 20;

/// Parse every document in a YAML or JSON file. A syntax error is one diagnostic at its place.
pub fn parse_documents(file: &Arc<Path>, text: &str) -> Result<Vec<Document>, Diagnostic> {
    let at = |line: usize, col: usize| Location::new(file.to_path_buf(), line, col);
    if text.len() > MAX_FILE_BYTES {
        return Err(Diagnostic::error_at(
            at(1, 1),
            format!("holds {} bytes: expected at most {MAX_FILE_BYTES} bytes (16 MiB) in one file", text.len()),
        ));
    }
    let mut parser = Parser::new_from_str(text);
    let mut builder = Builder::default();
    while let Some(event) = parser.next_event() {
        let (event, span) = event.map_err(|e| {
            Diagnostic::error_at(at(e.marker().line(), e.marker().col() + 1), format!("invalid YAML: {}", e.info()))
        })?;
        let pos = Pos { line: span.start.line() as u32, column: span.start.col() as u32 + 1 };
        builder.event(event, pos).map_err(|(pos, msg, related)| {
            let d = Diagnostic::error_at(at(pos.line as usize, pos.column as usize), msg);
            match related {
                Some((p, note)) => d.with_related(at(p.line as usize, p.column as usize), note),
                None => d,
            }
        })?;
    }
    Ok(builder
        .documents
        .into_iter()
        .enumerate()
        // An empty document (`---` followed by nothing) declares nothing.
        .filter(|(_, root)| root.value != NodeValue::Null)
        .map(|(index, root)| Document { file: file.clone(), index, root })
        .collect())
}

type BuildError = (Pos, String, Option<(Pos, String)>);

/// The size of a node and everything under it: nodes, and bytes of keys and scalars.
#[derive(Clone, Copy, Debug, Default)]
struct Weight {
    nodes: usize,
    bytes: usize,
}

impl Weight {
    fn add(&mut self, other: Weight) {
        self.nodes = self.nodes.saturating_add(other.nodes);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }
}

/// From this many keys on, a mapping looks for duplicates through a set of key hashes instead of
/// scanning its entries, so that a mapping of N keys is checked in O(N), not O(N²).
const KEY_INDEX_FROM: usize = 8;

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
        weight: Weight,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<Entry>,
        key: Option<(String, Pos, Style)>,
        weight: Weight,
        keys: KeyIndex,
    },
}

/// Hashes of a large mapping's keys. The hasher is keyed at random per process, so no input
/// can be made to collide on purpose; a hash found is confirmed by comparing the keys.
#[derive(Default)]
struct KeyIndex(Option<std::collections::HashSet<u64>>);

/// Builds [`Node`] trees from the parser's events.
#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    documents: Vec<Node>,
    /// Anchored nodes and their weights (cloned only while they fit what aliases may copy).
    anchors: std::collections::HashMap<usize, Option<(Node, Weight)>>,
    /// What aliases copied so far, and what anchors hold.
    aliased: Weight,
    anchored: Weight,
    hasher: std::hash::RandomState,
}

impl Builder {
    fn event(&mut self, event: Event<'_>, pos: Pos) -> Result<(), BuildError> {
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                if let Some(Frame::Map { key: key @ None, weight, .. }) = self.stack.last_mut() {
                    weight.bytes = weight.bytes.saturating_add(text.len());
                    *key = Some((text.to_string(), pos, style_of(style)));
                    return Ok(());
                }
                let value = scalar_value(&text, style, tag.as_deref()).map_err(|m| (pos, m, None))?;
                self.finish(Node { pos, value }, anchor, Weight { nodes: 1, bytes: text.len() })
            }
            Event::SequenceStart(anchor, _) => {
                self.open(pos)?;
                self.stack.push(Frame::Seq { pos, anchor, items: Vec::new(), weight: Weight::default() });
                Ok(())
            }
            Event::MappingStart(anchor, _) => {
                self.open(pos)?;
                self.stack.push(Frame::Map {
                    pos,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                    weight: Weight::default(),
                    keys: KeyIndex::default(),
                });
                Ok(())
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor, mut weight) = match self.stack.pop() {
                    Some(Frame::Seq { pos, anchor, items, weight }) => {
                        (Node { pos, value: NodeValue::Seq(items) }, anchor, weight)
                    }
                    Some(Frame::Map { pos, anchor, entries, weight, .. }) => {
                        (Node { pos, value: NodeValue::Map(entries) }, anchor, weight)
                    }
                    None => return Err((pos, "unbalanced YAML collection".into(), None)),
                };
                weight.nodes = weight.nodes.saturating_add(1);
                self.finish(node, anchor, weight)
            }
            Event::Alias(id) => {
                let Some(anchored) = self.anchors.get(&id) else {
                    return Err((pos, "alias to an unknown anchor".into(), None));
                };
                let weight =
                    anchored.as_ref().map(|(_, w)| *w).unwrap_or(Weight { nodes: usize::MAX, bytes: usize::MAX });
                self.aliased.add(weight);
                if self.aliased.nodes > MAX_ALIAS_NODES || self.aliased.bytes > MAX_ALIAS_BYTES {
                    return Err((
                        pos,
                        format!(
                            "aliases copy too much: expected at most {MAX_ALIAS_NODES} nodes and {MAX_ALIAS_BYTES} bytes (16 MiB) copied by aliases in one file"
                        ),
                        None,
                    ));
                }
                let node =
                    anchored.as_ref().map(|(n, _)| n.clone()).expect("a copy too large to keep fails the limit above");
                if let Some(Frame::Map { key: key @ None, weight: parent, .. }) = self.stack.last_mut() {
                    let NodeValue::Str(text, style) = node.value else {
                        return Err((pos, "a mapping key must be a string, found a collection".into(), None));
                    };
                    parent.bytes = parent.bytes.saturating_add(text.len());
                    *key = Some((text, pos, style));
                    return Ok(());
                }
                self.finish(Node { pos, ..node }, 0, weight)
            }
            Event::DocumentEnd => {
                // A document with no content at all is an empty one.
                Ok(())
            }
            Event::DocumentStart(_) => {
                self.documents.push(Node { pos, value: NodeValue::Null });
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// A collection starts: it cannot be a mapping key, and it may not nest too deep.
    fn open(&self, pos: Pos) -> Result<(), BuildError> {
        if let Some(Frame::Map { key: None, .. }) = self.stack.last() {
            return Err((pos, "a mapping key must be a string, found a collection".into(), None));
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err((
                pos,
                format!("mappings and sequences nest too deep here: expected at most {MAX_DEPTH} levels"),
                None,
            ));
        }
        Ok(())
    }

    /// Put a complete node where it belongs: in its parent, or as the document's root.
    fn finish(&mut self, node: Node, anchor: usize, weight: Weight) -> Result<(), BuildError> {
        if anchor != 0 {
            // An anchor keeps a copy for its aliases; what no alias could ever copy is not kept,
            // so that nested anchors cannot multiply a file's size in memory.
            self.anchored.add(weight);
            let fits = self.anchored.nodes <= MAX_ALIAS_NODES.saturating_mul(2)
                && self.anchored.bytes <= MAX_ALIAS_BYTES.saturating_mul(2)
                && weight.nodes <= MAX_ALIAS_NODES
                && weight.bytes <= MAX_ALIAS_BYTES;
            self.anchors.insert(anchor, fits.then(|| (node.clone(), weight)));
        }
        match self.stack.last_mut() {
            Some(Frame::Seq { items, weight: parent, .. }) => {
                parent.add(weight);
                items.push(node);
            }
            Some(Frame::Map { entries, key, weight: parent, keys, .. }) => {
                parent.add(weight);
                let (k, key_pos, key_style) = key.take().expect("a value follows its key");
                if let Some(first) = find_duplicate(entries, keys, &self.hasher, &k) {
                    return Err((
                        key_pos,
                        format!("duplicate key {k:?} in one mapping"),
                        Some((first, "first written here".into())),
                    ));
                }
                entries.push(Entry { key: k, key_pos, key_style, value: node });
            }
            None => match self.documents.last_mut() {
                Some(root) => *root = node,
                None => self.documents.push(node),
            },
        }
        Ok(())
    }
}

/// Where `key` is already written in a mapping's `entries`, if it is; records `key` as written.
fn find_duplicate(
    entries: &[Entry],
    keys: &mut KeyIndex,
    hasher: &impl std::hash::BuildHasher,
    key: &str,
) -> Option<Pos> {
    let scan = || entries.iter().find(|e| e.key == key).map(|e| e.key_pos);
    if entries.len() < KEY_INDEX_FROM {
        return scan();
    }
    let index = keys.0.get_or_insert_with(|| entries.iter().map(|e| hasher.hash_one(e.key.as_str())).collect());
    if index.insert(hasher.hash_one(key)) { None } else { scan() }
}

fn style_of(style: ScalarStyle) -> Style {
    match style {
        ScalarStyle::Plain => Style::Plain,
        ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => Style::Quoted,
        _ => Style::Block,
    }
}

fn from_saphyr_scalar(s: &SaphyrScalar) -> Result<NodeValue, String> {
    Ok(match s {
        SaphyrScalar::Null => NodeValue::Null,
        SaphyrScalar::Boolean(b) => NodeValue::Bool(*b),
        SaphyrScalar::Integer(i) => NodeValue::Number((*i).into()),
        SaphyrScalar::FloatingPoint(f) => NodeValue::Number(
            Number::from_f64(f.into_inner()).ok_or("a number that JSON cannot represent (inf or nan)")?,
        ),
        SaphyrScalar::String(s) => NodeValue::Str(s.to_string(), Style::Plain),
    })
}

fn scalar_value(text: &str, style: ScalarStyle, tag: Option<&saphyr_parser::Tag>) -> Result<NodeValue, String> {
    if let Some(tag) = tag {
        // Explicit core tags (`!!str 3`, `!!int "3"`) decide the type themselves.
        if tag.is_yaml_core_schema() {
            return match tag.suffix.as_str() {
                "str" => Ok(NodeValue::Str(text.to_string(), style_of(style))),
                _ => resolve_plain(text).map(|v| v.unwrap_or(NodeValue::Str(text.to_string(), Style::Plain))),
            };
        }
    }
    if style != ScalarStyle::Plain {
        return Ok(NodeValue::Str(text.to_string(), style_of(style)));
    }
    Ok(resolve_plain(text)?.unwrap_or_else(|| NodeValue::Str(text.to_string(), Style::Plain)))
}

/// The YAML 1.2 core schema for plain scalars: null, booleans, integers and floats; anything
/// else is a string (`None`). Used again after a plain scalar has had variables substituted.
pub fn resolve_plain(text: &str) -> Result<Option<NodeValue>, String> {
    if text.is_empty() {
        return Ok(Some(NodeValue::Null));
    }
    let parsed = SaphyrScalar::parse_from_cow(text.into());
    Ok(match parsed {
        SaphyrScalar::String(_) => None,
        other => Some(from_saphyr_scalar(&other)?),
    })
}

impl Node {
    pub fn find(&self, pointer: &str) -> Option<&Node> {
        let mut node = self;
        for seg in pointer_segments(pointer) {
            node = match &node.value {
                NodeValue::Map(entries) => &entries.iter().find(|e| e.key == seg)?.value,
                NodeValue::Seq(items) => items.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(node)
    }

    pub fn find_mut(&mut self, pointer: &str) -> Option<&mut Node> {
        let mut node = self;
        for seg in pointer_segments(pointer) {
            node = match &mut node.value {
                NodeValue::Map(entries) => &mut entries.iter_mut().find(|e| e.key == seg)?.value,
                NodeValue::Seq(items) => items.get_mut(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// The position of the node at `pointer`, or of the deepest node on the way to it.
    pub fn locate(&self, pointer: &str) -> Pos {
        let mut node = self;
        for seg in pointer_segments(pointer) {
            let next = match &node.value {
                NodeValue::Map(entries) => entries.iter().find(|e| e.key == seg).map(|e| &e.value),
                NodeValue::Seq(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node.pos
    }

    pub fn to_json(&self) -> Value {
        match &self.value {
            NodeValue::Null => Value::Null,
            NodeValue::Bool(b) => Value::Bool(*b),
            NodeValue::Number(n) => Value::Number(n.clone()),
            NodeValue::Str(s, _) => Value::String(s.clone()),
            NodeValue::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeValue::Map(entries) => {
                let mut map = Map::with_capacity(entries.len());
                for e in entries {
                    map.insert(e.key.clone(), e.value.to_json());
                }
                Value::Object(map)
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            NodeValue::Map(entries) => entries.iter().find(|e| e.key == key).map(|e| &e.value),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            NodeValue::Str(s, _) => Some(s),
            _ => None,
        }
    }

    pub fn entries(&self) -> &[Entry] {
        match &self.value {
            NodeValue::Map(entries) => entries,
            _ => &[],
        }
    }
}

/// Split an RFC 6901 JSON pointer into unescaped segments.
pub fn pointer_segments(pointer: &str) -> impl Iterator<Item = String> + '_ {
    pointer.split('/').skip(1).map(|s| s.replace("~1", "/").replace("~0", "~"))
}

/// Escape one key for use in a JSON pointer.
pub fn pointer_escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Document>, Diagnostic> {
        parse_documents(&Arc::from(Path::new("m.yaml")), text)
    }

    #[test]
    fn keeps_positions_of_keys_and_values() {
        let docs = parse("jobs:\n  job::/a::b:\n    num_instances: 3\n").unwrap();
        let d = &docs[0];
        assert_eq!(d.locate("/jobs/job::~1a::b/num_instances").to_string(), "m.yaml:3:20");
        assert_eq!(d.locate_key("/jobs/job::~1a::b", "num_instances").to_string(), "m.yaml:3:5");
        assert_eq!(d.root.to_json(), serde_json::json!({"jobs": {"job::/a::b": {"num_instances": 3}}}));
    }

    #[test]
    fn syntax_errors_name_their_place() {
        let e = parse("a: 1\n  b: [\n").unwrap_err();
        assert_eq!(e.location.unwrap().line, 2);
        assert!(e.message.starts_with("invalid YAML"), "{}", e.message);
    }

    #[test]
    fn duplicate_keys_are_errors_naming_both_places() {
        let e = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(e.location.as_ref().unwrap().line, 3);
        assert_eq!(e.related.as_ref().unwrap().0.line, 1);
    }

    #[test]
    fn json_files_parse_with_positions_and_types() {
        let docs = parse("{\n\t\"a\": {\"n\": 3, \"s\": \"x\\/y\", \"t\": true, \"z\": null}\n}\n").unwrap();
        assert_eq!(docs[0].root.to_json(), serde_json::json!({"a": {"n": 3, "s": "x/y", "t": true, "z": null}}));
        assert_eq!(docs[0].locate("/a/n").line, 2);
    }

    #[test]
    fn quoted_scalars_stay_strings_and_plain_ones_are_typed() {
        let docs = parse("a: \"3\"\nb: 3\nc: yes\nd: true\ne: 1.5\n").unwrap();
        assert_eq!(docs[0].root.to_json(), serde_json::json!({"a": "3", "b": 3, "c": "yes", "d": true, "e": 1.5}));
    }

    #[test]
    fn multi_document_files_skip_empty_documents() {
        let docs = parse("---\na: 1\n---\n---\nb: 2\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].index, 2);
    }

    #[test]
    fn nesting_is_bounded_in_block_and_flow_style() {
        let deep_block = format!("{}a\n", "- ".repeat(MAX_DEPTH + 1));
        let deep_flow = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        for text in [deep_block, deep_flow] {
            let e = parse(&text).unwrap_err();
            assert!(e.message.contains("nest too deep"), "{}", e.message);
            assert_eq!(e.location.unwrap().line, 1);
        }
        let ok = format!("{}a\n", "- ".repeat(MAX_DEPTH));
        parse(&ok).unwrap();
    }

    #[test]
    fn aliases_are_bounded_by_the_bytes_they_copy() {
        let big = "x".repeat(1 << 20);
        let text = format!("a: &s {big}\nb: [{}]\n", vec!["*s"; 17].join(", "));
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("aliases copy too much"), "{}", e.message);
        let text = format!("a: &s {big}\nb: [{}]\n", vec!["*s"; 15].join(", "));
        assert_eq!(parse(&text).unwrap()[0].root.get("b").unwrap().to_json().as_array().unwrap().len(), 15);
    }

    #[test]
    fn nested_anchors_keep_no_copy_that_no_alias_could_use() {
        // Every level anchored: copies of each would hold the file many times over.
        let mut text = String::new();
        for i in 0..40 {
            text.push_str(&format!("{}k{i}: &a{i}\n", "  ".repeat(i)));
        }
        text.push_str(&format!("{}leaf: {}\n", "  ".repeat(40), "y".repeat(1 << 20)));
        parse(&text).unwrap();
    }

    #[test]
    fn many_keys_are_checked_for_duplicates_in_linear_time() {
        let mut text: String = (0..50_000).map(|i| format!("k{i}: {i}\n")).collect();
        assert_eq!(parse(&text).unwrap()[0].root.entries().len(), 50_000);
        text.push_str("k7: again\n");
        let e = parse(&text).unwrap_err();
        assert_eq!((e.location.unwrap().line, e.related.unwrap().0.line), (50_001, 8));
    }

    #[test]
    fn a_file_over_the_size_limit_is_one_error_naming_it() {
        let text = "#".repeat(MAX_FILE_BYTES + 1);
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("16 MiB"), "{}", e.message);
        assert_eq!(e.location.unwrap().to_string(), "m.yaml:1:1");
    }
}
