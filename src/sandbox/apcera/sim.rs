//! Policy simulation (seed 003 L3705-3896): `GET /v1/sim` against the stored policy, `PUT /v1/sim`
//! with documents that replace (by name) or join the stored ones for this one answer.
//!
//! The sandbox evaluates a small subset of Apcera's policy language, and answers `unknown` for
//! anything outside it rather than guess: it never answers `permit` where a real cluster might
//! deny. The subset:
//!
//! ```text
//! // comments to the end of a line
//! on <type>::<namespace>[::<name>] {        // the realm and everything below it;
//!                                           // type `*` or `all` is any type
//!   { permit create, read }                 // a grant; `deny <values>` likewise
//!   if (name == "jane" && role != admin) {  // conditions on input claims, joined by &&
//!     permit all                            // grants, bare or in braces
//!   }
//! }
//! ```
//!
//! Operators must stand between spaces. `all` as a value grants (or denies) every value.
//! Evaluation of `claim=permit=<v>` for a realm FQN and input claims: a `deny` of `<v>` or `all`
//! that applies wins; else a `permit` of `<v>` or `all` that applies permits; else the answer is
//! `deny` (nothing permits it). Grants of other claims (`package.allow`, `role ...`) do not
//! change the answer, unless a condition tests such a claim (a derived claim): `unknown`.
//!
//! `unknown` (with a `reason`) is the answer when a document that could apply to the realm is
//! outside the subset (no `on`, a realm with `[templates]`, another operator such as `equals`
//! or `fqnMatch`, `||`, `else`), when a `!=` tests an input that is absent, or when the claim
//! asked about is not `permit`. A document that does not parse at all counts as applying to
//! every realm.
//!
//! The answer is the seed's PolicySimResponse (`lines`, `maxc`, `maxl`, `maxv`), where each
//! applying grant is a level-0 claim line (type 0) with its realm (type 3) and conditions
//! (type 1) at level 1; with `why=true` and a `deny`, the grants whose conditions did not hold
//! follow, each with the inputs that would make them hold (`ADD INPUT`, type 2). The sandbox adds
//! `result` (`permit`, `deny` or `unknown`) and, for `unknown`, `reason`.

use super::policy::{DocsRequest, check_docs};
use super::{Api, api_error, parse, query_pairs};
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Open,
    Close,
    LParen,
    RParen,
    Comma,
    Word(String),
    Str(String),
}

fn tokenize(text: &str) -> Result<Vec<(Tok, usize)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        let mut chars = line.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                c if c.is_whitespace() => {}
                '/' if line[i..].starts_with("//") => break,
                '{' => out.push((Tok::Open, line_no)),
                '}' => out.push((Tok::Close, line_no)),
                '(' => out.push((Tok::LParen, line_no)),
                ')' => out.push((Tok::RParen, line_no)),
                ',' => out.push((Tok::Comma, line_no)),
                '"' => {
                    let mut s = String::new();
                    let mut closed = false;
                    while let Some((_, c)) = chars.next() {
                        match c {
                            '"' => {
                                closed = true;
                                break;
                            }
                            '\\' => s.extend(chars.next().map(|(_, c)| c)),
                            c => s.push(c),
                        }
                    }
                    if !closed {
                        return Err(format!("line {line_no}: unterminated string"));
                    }
                    out.push((Tok::Str(s), line_no));
                }
                _ => {
                    let mut w = String::from(c);
                    while let Some(&(_, c)) = chars.peek() {
                        if c.is_whitespace() || "{}(),\"".contains(c) {
                            break;
                        }
                        w.push(c);
                        chars.next();
                    }
                    out.push((Tok::Word(w), line_no));
                }
            }
        }
    }
    Ok(out)
}

#[derive(Clone, Debug)]
struct Cond {
    name: String,
    equal: bool,
    value: String,
}

#[derive(Clone, Debug)]
struct Grant {
    claim: String,
    values: Vec<String>,
    conds: Vec<Cond>,
    line: usize,
}

#[derive(Clone, Debug)]
struct Block {
    doc: String,
    realm: String,
    line: usize,
    /// Why the block is outside the subset, if it is.
    opaque: Option<String>,
    grants: Vec<Grant>,
}

struct Parser<'a> {
    toks: &'a [(Tok, usize)],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at).map(|t| &t.0)
    }

    fn line(&self) -> usize {
        self.toks.get(self.at).or(self.toks.last()).map_or(0, |t| t.1)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.at).map(|t| t.0.clone());
        self.at += 1;
        t
    }

    fn expect(&mut self, t: Tok) -> Result<(), String> {
        let line = self.line();
        match self.next() {
            Some(got) if got == t => Ok(()),
            got => Err(format!("line {line}: expected {t:?}, found {got:?}")),
        }
    }

    /// Skip to the token after the `}` that closes the brace just opened.
    fn skip_block(&mut self) {
        let mut depth = 1;
        while let Some(t) = self.next() {
            match t {
                Tok::Open => depth += 1,
                Tok::Close if depth == 1 => return,
                Tok::Close => depth -= 1,
                _ => {}
            }
        }
    }

    /// `claim value[, value...]` up to a brace.
    fn grant(&mut self, conds: &[Cond]) -> Result<Grant, String> {
        let line = self.line();
        let claim = match self.next() {
            Some(Tok::Word(w)) => w,
            got => return Err(format!("line {line}: expected a claim, found {got:?}")),
        };
        let mut values = Vec::new();
        loop {
            match self.peek() {
                Some(Tok::Word(w)) if w != "if" => values.push(w.clone()),
                Some(Tok::Str(s)) => values.push(s.clone()),
                Some(Tok::Comma) => {}
                _ => break,
            }
            self.at += 1;
        }
        Ok(Grant { claim, values, conds: conds.to_vec(), line })
    }

    fn conds(&mut self) -> Result<Vec<Cond>, String> {
        self.expect(Tok::LParen)?;
        let mut out = Vec::new();
        loop {
            let line = self.line();
            let (Some(Tok::Word(name)), Some(Tok::Word(op)), Some(value)) = (self.next(), self.next(), self.next())
            else {
                return Err(format!("line {line}: expected <input> == <value>"));
            };
            let value = match value {
                Tok::Word(w) | Tok::Str(w) => w,
                t => return Err(format!("line {line}: expected a value, found {t:?}")),
            };
            let equal = match op.as_str() {
                "==" => true,
                "!=" => false,
                other => return Err(format!("line {line}: operator {other:?} is outside the simulated subset")),
            };
            out.push(Cond { name, equal, value });
            match self.next() {
                Some(Tok::RParen) => return Ok(out),
                Some(Tok::Word(w)) if w == "&&" => {}
                got => return Err(format!("line {line}: expected && or ), found {got:?}")),
            }
        }
    }

    /// The items of a realm block, after its `{`.
    fn items(&mut self) -> Result<Vec<Grant>, String> {
        let mut grants = Vec::new();
        loop {
            let line = self.line();
            match self.next() {
                Some(Tok::Close) => return Ok(grants),
                Some(Tok::Open) => {
                    grants.push(self.grant(&[])?);
                    self.expect(Tok::Close)?;
                }
                Some(Tok::Word(w)) if w == "if" => {
                    let conds = self.conds()?;
                    self.expect(Tok::Open)?;
                    loop {
                        match self.peek() {
                            Some(Tok::Close) => {
                                self.at += 1;
                                break;
                            }
                            Some(Tok::Open) => {
                                self.at += 1;
                                grants.push(self.grant(&conds)?);
                                self.expect(Tok::Close)?;
                            }
                            Some(Tok::Word(w)) if w != "if" => grants.push(self.grant(&conds)?),
                            got => return Err(format!("line {}: unexpected {got:?} in an if", self.line())),
                        }
                    }
                    if let Some(Tok::Word(w)) = self.peek()
                        && w == "else"
                    {
                        return Err(format!("line {}: else is outside the simulated subset", self.line()));
                    }
                }
                got => return Err(format!("line {line}: unexpected {got:?}")),
            }
        }
    }
}

/// The blocks of one document; Err when even its block structure cannot be read.
fn parse_doc(doc: &str, text: &str) -> Result<Vec<Block>, String> {
    let toks = tokenize(text)?;
    let mut p = Parser { toks: &toks, at: 0 };
    let mut blocks = Vec::new();
    while p.peek().is_some() {
        let line = p.line();
        let mut on = false;
        if matches!(p.peek(), Some(Tok::Word(w)) if w == "on") {
            on = true;
            p.at += 1;
        }
        let realm = match p.next() {
            Some(Tok::Word(w)) if w.contains("::") => w,
            got => return Err(format!("line {line}: expected a realm FQN, found {got:?}")),
        };
        p.expect(Tok::Open)?;
        let start = p.at;
        let mut block = Block { doc: doc.to_string(), realm: realm.clone(), line, opaque: None, grants: Vec::new() };
        if !on {
            block.opaque = Some(format!("line {line}: a realm without `on` is outside the simulated subset"));
        } else if realm.contains('[') {
            block.opaque = Some(format!("line {line}: realm templates are outside the simulated subset"));
        } else {
            match p.items() {
                Ok(g) => block.grants = g,
                Err(e) => block.opaque = Some(e),
            }
        }
        if block.opaque.is_some() {
            p.at = start;
            p.skip_block();
        }
        blocks.push(block);
    }
    Ok(blocks)
}

/// Whether the realm `on <realm>` covers the FQN asked about.
fn covers(realm: &str, fqn: &str) -> bool {
    let (Some((rk, rrest)), Some((k, rest))) = (realm.split_once("::"), fqn.split_once("::")) else { return false };
    if !(rk == "*" || rk == "all" || rk == k) {
        return false;
    }
    let split = |s: &str| -> (String, Option<String>) {
        match s.split_once("::") {
            Some((ns, local)) => (ns.trim_end_matches('/').to_string(), Some(local.to_string())),
            None => (s.trim_end_matches('/').to_string(), None),
        }
    };
    let (rns, rlocal) = split(rrest);
    let (ns, local) = split(rest);
    match rlocal {
        Some(rl) => rns == ns && local.as_deref() == Some(rl.as_str()),
        None => rns.is_empty() || ns == rns || ns.starts_with(&format!("{rns}/")),
    }
}

/// `name=value` input claims (`Google->email=x`, `name="tim s"`).
fn inputs(pairs: &[(String, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .filter(|(k, _)| k == "input")
        .filter_map(|(_, v)| v.split_once('=').map(|(a, b)| (a.to_string(), b.trim_matches('"').to_string())))
        .collect()
}

/// The answer of one simulation, as JSON.
pub fn simulate(docs: &[(String, String)], pairs: &[(String, String)]) -> Value {
    let fqns: Vec<&str> = pairs.iter().filter(|(k, _)| k == "fqn").map(|(_, v)| v.as_str()).collect();
    let fqns = if fqns.is_empty() { vec!["*::/"] } else { fqns };
    let input = inputs(pairs);
    let why = pairs.iter().any(|(k, v)| k == "why" && v == "true");
    let claim = pairs.iter().find(|(k, _)| k == "claim").map(|(_, v)| v.as_str()).unwrap_or("permit");
    let (ctype, cvalue) = match claim.split_once('=') {
        Some((t, v)) => (t, Some(v)),
        None => (claim, None),
    };
    let mut blocks = Vec::new();
    let mut unknown: Option<String> = None;
    for (name, text) in docs {
        match parse_doc(name, text) {
            Ok(b) => blocks.extend(b),
            Err(e) => {
                unknown.get_or_insert(format!("{name}.pol: {e}"));
            }
        }
    }
    if ctype != "permit" {
        unknown.get_or_insert(format!("only permit claims are simulated, not {ctype:?}"));
    }
    let applying: Vec<&Block> = blocks.iter().filter(|b| fqns.iter().any(|f| covers(&b.realm, f))).collect();
    for b in &applying {
        if let Some(why) = &b.opaque {
            unknown.get_or_insert(format!("{}.pol: {why}", b.doc));
        }
    }
    // Claims these blocks grant, other than permit and deny: a condition on one is derived.
    let derived: Vec<&str> = applying
        .iter()
        .flat_map(|b| &b.grants)
        .filter(|g| g.claim != "permit" && g.claim != "deny")
        .map(|g| g.claim.as_str())
        .collect();
    let wanted = |g: &Grant| cvalue.is_none_or(|v| g.values.iter().any(|x| x == v || x == "all"));
    let mut lines = Vec::new();
    let mut permit = false;
    let mut deny = false;
    let mut missed: Vec<(&Block, &Grant)> = Vec::new();
    for b in &applying {
        for g in &b.grants {
            if g.claim != "permit" && g.claim != "deny" {
                continue;
            }
            let mut holds = true;
            for c in &g.conds {
                if derived.contains(&c.name.as_str()) {
                    unknown.get_or_insert(format!("{}.pol:{}: {} is a derived claim", b.doc, g.line, c.name));
                }
                let present: Vec<&str> = input.iter().filter(|(k, _)| *k == c.name).map(|(_, v)| v.as_str()).collect();
                if !c.equal && present.is_empty() {
                    unknown.get_or_insert(format!("{}.pol:{}: != on the absent input {}", b.doc, g.line, c.name));
                }
                let ok =
                    if c.equal { present.contains(&c.value.as_str()) } else { !present.contains(&c.value.as_str()) };
                holds &= ok;
            }
            if !wanted(g) {
                continue;
            }
            if !holds {
                missed.push((b, g));
                continue;
            }
            if g.claim == "deny" {
                deny = true;
            } else {
                permit = true;
            }
            push_grant(&mut lines, b, g, 0);
        }
    }
    let result = if unknown.is_some() {
        "unknown"
    } else if deny || !permit {
        "deny"
    } else {
        "permit"
    };
    if why && result == "deny" {
        for (b, g) in missed.into_iter().filter(|(_, g)| g.claim == "permit") {
            push_grant(&mut lines, b, g, 0);
            for c in g.conds.iter().filter(|c| c.equal) {
                lines.push(json!({ "context": "ADD INPUT", "level": 2, "type": 2, "value": format!("{} {:?}", c.name, c.value) }));
            }
        }
    }
    let max = |f: &dyn Fn(&Value) -> u64| lines.iter().map(f).max().unwrap_or(0);
    let maxc = max(&|l| l["context"].as_str().map_or(0, |s| s.len() as u64));
    let maxl = max(&|l| l["level"].as_u64().unwrap_or(0));
    let maxv = max(&|l| l["value"].as_str().map_or(0, |s| s.len() as u64));
    let mut out = json!({ "lines": lines, "maxc": maxc, "maxl": maxl, "maxv": maxv, "result": result });
    if let Some(r) = unknown {
        out["reason"] = json!(r);
    }
    out
}

fn push_grant(lines: &mut Vec<Value>, b: &Block, g: &Grant, level: u64) {
    let ctx = |line: usize| format!("(s) {}.pol:{line}", b.doc);
    lines.push(json!({ "context": ctx(g.line), "level": level, "type": 0, "value": format!("{} {}", g.claim, g.values.join(", ")) }));
    lines.push(json!({ "context": ctx(b.line), "level": level + 1, "type": 3, "value": b.realm }));
    for c in &g.conds {
        let op = if c.equal { "==" } else { "!=" };
        lines.push(json!({ "context": ctx(g.line), "level": level + 1, "type": 1, "value": format!("({} {op} {:?})", c.name, c.value) }));
    }
}

fn stored_docs(api: &Api) -> Vec<(String, String)> {
    api.lock().policy.iter().map(|(n, d)| (n.clone(), d.text().to_string())).collect()
}

pub async fn get(State(api): State<Api>, RawQuery(q): RawQuery) -> Response {
    let pairs = query_pairs(q.as_deref());
    axum::Json(simulate(&stored_docs(&api), &pairs)).into_response()
}

pub async fn put(State(api): State<Api>, RawQuery(q): RawQuery, body: Bytes) -> Response {
    let req: DocsRequest = if body.is_empty() {
        DocsRequest { docs: Vec::new() }
    } else {
        match parse(&body) {
            Ok(r) => r,
            Err(r) => return r.into_response(),
        }
    };
    if let Err(r) = check_docs(&req) {
        return r.into_response();
    }
    let mut docs = stored_docs(&api);
    for d in req.docs {
        match docs.iter_mut().find(|(n, _)| *n == d.name) {
            Some(slot) => slot.1 = d.text,
            None => docs.push((d.name, d.text)),
        }
    }
    let pairs = query_pairs(q.as_deref());
    if pairs.iter().any(|(k, _)| k == "input" || k == "fqn" || k == "claim") || pairs.is_empty() {
        axum::Json(simulate(&docs, &pairs)).into_response()
    } else {
        api_error(StatusCode::BAD_REQUEST, "unknown simulation parameters")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Vec<(String, String)> {
        query_pairs(Some(s))
    }

    fn answer(docs: &[(&str, &str)], query: &str) -> String {
        let docs: Vec<(String, String)> = docs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        simulate(&docs, &q(query))["result"].as_str().unwrap().to_string()
    }

    const TIM: &str = "on job::/sandbox/tim {{ permit create }}";

    #[test]
    fn the_seeds_example_permits_within_its_realm_only() {
        assert_eq!(answer(&[("t", TIM)], "fqn=job::/sandbox/tim&input=name=tim&claim=permit=create"), "permit");
        assert_eq!(answer(&[("t", TIM)], "fqn=job::/sandbox/tim/x::a&claim=permit=create"), "permit");
        assert_eq!(answer(&[("t", TIM)], "fqn=job::/sandbox/timothy&claim=permit=create"), "deny");
        assert_eq!(answer(&[("t", TIM)], "fqn=job::/sandbox/tim&claim=permit=delete"), "deny");
        assert_eq!(answer(&[("t", TIM)], "fqn=service::/sandbox/tim&claim=permit=create"), "deny");
    }

    #[test]
    fn conditions_on_inputs_and_deny_wins() {
        let doc = "// who may deploy\non job::/prod {\n  if (name == \"jane\" && role != intern) {\n    permit create, update\n  }\n  { deny delete }\n}\n";
        assert_eq!(
            answer(&[("p", doc)], "fqn=job::/prod::web&input=name=jane&input=role=dev&claim=permit=create"),
            "permit"
        );
        assert_eq!(
            answer(&[("p", doc)], "fqn=job::/prod::web&input=name=bob&input=role=dev&claim=permit=create"),
            "deny"
        );
        assert_eq!(
            answer(&[("p", doc)], "fqn=job::/prod::web&input=name=jane&input=role=intern&claim=permit=create"),
            "deny"
        );
        let all = "on all::/ { { permit all } }";
        assert_eq!(
            answer(&[("p", doc), ("a", all)], "fqn=job::/prod::web&input=name=jane&input=role=dev&claim=permit=delete"),
            "deny"
        );
        assert_eq!(answer(&[("a", all)], "fqn=job::/prod::web&claim=permit=delete"), "permit");
    }

    #[test]
    fn outside_the_subset_is_unknown_never_permit() {
        let seed = "<continuum-policy description=\"x\">\n\non all::/sandbox/[name] {\n  if (auth_server@apcera.me->name == [name] && query->target fqnMatch \"*::/sandbox/[name]\") {\n    permit all\n  }\n}";
        assert_eq!(answer(&[("n", seed)], "fqn=job::/sandbox/x&claim=permit=create"), "unknown");
        let equals = "on job::/ {\n if (dependency equals os.linux) { package.default \"p\" }\n}";
        assert_eq!(
            answer(&[("e", equals), ("a", "on all::/ { { permit all } }")], "fqn=job::/x&claim=permit=create"),
            "unknown"
        );
        // `on job::/` covers the realm: its opaque part makes even a permit unknown.
        assert_eq!(answer(&[("e", equals), ("a", TIM)], "fqn=job::/sandbox/tim&claim=permit=create"), "unknown");
        let quota = "on quota::/ {\n  { max.package.size 2GB }\n}\n";
        assert_eq!(answer(&[("q", quota), ("a", TIM)], "fqn=job::/sandbox/tim&claim=permit=create"), "permit");
        let derived = "on job::/ { { role admin } if (role == admin) { permit all } }";
        assert_eq!(answer(&[("d", derived)], "fqn=job::/x&claim=permit=create"), "unknown");
        let no_on = "job::/x { { permit all } }";
        assert_eq!(answer(&[("o", no_on)], "fqn=job::/x&claim=permit=create"), "unknown");
        assert_eq!(answer(&[("t", TIM)], "fqn=job::/sandbox/tim&claim=deny=create"), "unknown");
    }

    #[test]
    fn why_lists_the_inputs_that_would_permit() {
        let doc = "on job::/ {\n  if (role == \"admin\") { permit all }\n}";
        let docs = vec![("roles".to_string(), doc.to_string())];
        let out = simulate(&docs, &q("fqn=job::/sandbox/john&input=name=jane&claim=permit=create&why=true"));
        assert_eq!(out["result"], "deny");
        let lines = out["lines"].as_array().unwrap();
        assert!(lines.iter().any(|l| l["context"] == "ADD INPUT" && l["value"] == "role \"admin\""), "{out}");
        assert!(lines.iter().any(|l| l["type"] == 3 && l["value"] == "job::/"), "{out}");
    }
}
