//! The compiled scope matcher: one trie over every scope's filters, answering "which scopes does
//! this topic fall in" with no allocation per message.
//!
//! Each trie node is one sequence of filter levels (literal or `+`); a filter ending in `#`
//! records its scope in the node's `multi` list, any other filter in `terminal`. A topic is walked
//! level by level over the set of live nodes (a `+` child and a literal child may both be live),
//! so the cost is proportional to the topic's depth and the number of live nodes, not to the
//! number of filters. Each topic level is looked up once in a symbol table of every literal level
//! the filters use; a level that no filter spells can only follow `+` edges.
//!
//! Bounds: nodes ≤ total filter levels + 1; the two live-node lists are reserved to the node count
//! at build time, so a walk never grows them.
//!
//! The symbol table uses a small multiplicative hash instead of SipHash: its keys are fixed when
//! the scopes are compiled and topics only probe it, so a chosen topic can at worst walk the
//! longest probe chain the filters themselves created (no flooding is possible), and hashing is
//! the largest cost per level.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::topic_filter::{Level, TopicFilter};

/// Index of a node in `ScopeMatcher::nodes`.
type NodeId = u32;

/// Sentinel for "no `+` child".
const NO_NODE: NodeId = NodeId::MAX;

/// The root node's index.
const ROOT: NodeId = 0;

/// Multiply-rotate hash over 8-byte words (the FxHash scheme), for the symbol table only.
#[derive(Debug, Default, Clone, Copy)]
struct LevelHasher {
    /// Running state.
    hash: u64,
}

impl LevelHasher {
    /// Mixes one word into the state.
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for LevelHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            // Invariant: chunks_exact(8) chunks are 8 bytes.
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            // Invariant: a chunks_exact(8) remainder is shorter than 8.
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// Symbol table from literal level text to symbol id.
type Symbols = HashMap<Box<str>, u32, BuildHasherDefault<LevelHasher>>;

/// One trie node.
#[derive(Debug, Default)]
struct Node {
    /// Literal children as (symbol, node), sorted by symbol for binary search.
    literals: Vec<(u32, NodeId)>,
    /// The `+` child, or [`NO_NODE`].
    plus: NodeId,
    /// Scopes with a filter `<path to here>/#`.
    multi: Vec<u32>,
    /// Scopes with a filter ending exactly here.
    terminal: Vec<u32>,
}

/// A fixed-size bit set over scope indices, one bit per scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScopeBits {
    /// Little-endian words: scope `i` is bit `i % 64` of word `i / 64`.
    words: Vec<u64>,
}

impl ScopeBits {
    /// An empty set able to hold `len` scopes.
    pub(crate) fn new(len: usize) -> ScopeBits {
        ScopeBits {
            words: vec![0; len.div_ceil(64)],
        }
    }

    /// Adds scope `i`; indices beyond the capacity are ignored.
    pub(crate) fn insert(&mut self, i: usize) {
        if let Some(word) = self.words.get_mut(i / 64) {
            *word |= 1 << (i % 64);
        }
    }

    /// Is scope `i` in the set?
    #[cfg(test)]
    pub(crate) fn contains(&self, i: usize) -> bool {
        self.words
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Empties the set, keeping its capacity.
    fn clear(&mut self) {
        self.words.iter_mut().for_each(|w| *w = 0);
    }

    /// Calls `f` with every scope index in `self XOR flip`, in ascending order.
    pub(crate) fn for_each_xor(&self, flip: &ScopeBits, mut f: impl FnMut(usize)) {
        for (w, (&a, &b)) in self.words.iter().zip(flip.words.iter()).enumerate() {
            let mut bits = a ^ b;
            while bits != 0 {
                let bit = bits.trailing_zeros() as usize;
                f(w * 64 + bit);
                bits &= bits - 1;
            }
        }
    }
}

/// A trie over the filters of every scope. Built once per scope set; `&mut` only for scratch.
#[derive(Debug)]
pub(crate) struct ScopeMatcher {
    /// Every literal level used by a filter, interned.
    symbols: Symbols,
    /// The trie; `nodes[0]` is the root.
    nodes: Vec<Node>,
    /// Result of the last walk.
    matched: ScopeBits,
    /// Live nodes before the current level (scratch).
    current: Vec<NodeId>,
    /// Live nodes after the current level (scratch).
    next: Vec<NodeId>,
}

impl ScopeMatcher {
    /// Compiles `scopes[i]` = the filters of scope `i`.
    pub(crate) fn new<'a>(scopes: impl IntoIterator<Item = &'a [TopicFilter]>) -> ScopeMatcher {
        let mut symbols = Symbols::default();
        let mut nodes = vec![Node {
            plus: NO_NODE,
            ..Node::default()
        }];
        let mut scope_count = 0;
        for (scope, filters) in scopes.into_iter().enumerate() {
            scope_count = scope + 1;
            // Invariant: scope counts are bounded by MAX_SCOPES, far below u32::MAX.
            let scope = scope as u32;
            for filter in filters {
                // Invariant: `at` is always the root or an id push_node returned, < nodes.len().
                let mut at = ROOT as usize;
                let mut ends_in_multi = false;
                for level in filter.levels() {
                    at = match level {
                        Level::MultiLevel => {
                            ends_in_multi = true;
                            break;
                        }
                        Level::SingleLevel => {
                            if nodes[at].plus == NO_NODE {
                                nodes[at].plus = push_node(&mut nodes);
                            }
                            nodes[at].plus as usize
                        }
                        Level::Literal(text) => {
                            let next_symbol = symbols.len() as u32;
                            let symbol = *symbols.entry(text.clone()).or_insert(next_symbol);
                            // Invariant: binary_search gives Ok(i) < len, Err(i) <= len.
                            match nodes[at].literals.binary_search_by_key(&symbol, |e| e.0) {
                                Ok(i) => nodes[at].literals[i].1 as usize,
                                Err(i) => {
                                    let child = push_node(&mut nodes);
                                    nodes[at].literals.insert(i, (symbol, child));
                                    child as usize
                                }
                            }
                        }
                    };
                }
                let list = if ends_in_multi {
                    &mut nodes[at].multi
                } else {
                    &mut nodes[at].terminal
                };
                if !list.contains(&scope) {
                    list.push(scope);
                }
            }
        }
        let live = nodes.len();
        ScopeMatcher {
            symbols,
            nodes,
            matched: ScopeBits::new(scope_count),
            current: Vec::with_capacity(live),
            next: Vec::with_capacity(live),
        }
    }

    /// The scopes having at least one filter that matches `topic` (IN semantics; the caller flips
    /// NOT_IN scopes). Same rules as [`TopicFilter::matches`]; the empty string matches nothing.
    pub(crate) fn match_topic(&mut self, topic: &str) -> &ScopeBits {
        self.matched.clear();
        if topic.is_empty() {
            return &self.matched;
        }
        // spec: detect.md §5: `+`/`#` in first place never match a topic starting with `$`.
        let dollar = topic.as_bytes().first() == Some(&b'$');
        self.current.clear();
        self.current.push(ROOT);
        for (depth, text) in topic.split('/').enumerate() {
            let first_wildcards_allowed = depth > 0 || !dollar;
            self.next.clear();
            // Looked up at most once per level, and only if some live node has literal children.
            let mut symbol: Option<Option<u32>> = None;
            for &id in &self.current {
                // Invariant: live ids come from the trie's own edges, all < nodes.len().
                let node = &self.nodes[id as usize];
                if first_wildcards_allowed {
                    // `#` here covers this level and all the rest.
                    for &s in &node.multi {
                        self.matched.insert(s as usize);
                    }
                    if node.plus != NO_NODE {
                        self.next.push(node.plus);
                    }
                }
                if !node.literals.is_empty() {
                    let sym = *symbol.get_or_insert_with(|| self.symbols.get(text).copied());
                    if let Some(sym) = sym {
                        // Invariant: binary_search's Ok(i) is an index of `literals`.
                        if let Ok(i) = node.literals.binary_search_by_key(&sym, |e| e.0) {
                            self.next.push(node.literals[i].1);
                        }
                    }
                }
            }
            std::mem::swap(&mut self.current, &mut self.next);
            if self.current.is_empty() {
                return &self.matched;
            }
        }
        // Every level consumed: exact ends match, and `#` matches zero further levels.
        for &id in &self.current {
            // Invariant: as above, live ids are trie node ids.
            let node = &self.nodes[id as usize];
            for &s in node.terminal.iter().chain(node.multi.iter()) {
                self.matched.insert(s as usize);
            }
        }
        &self.matched
    }

    /// Number of trie nodes (for tests and diagnostics).
    #[cfg(test)]
    fn node_count(&self) -> usize {
        self.nodes.len()
    }
}

/// Appends an empty node and returns its id.
fn push_node(nodes: &mut Vec<Node>) -> NodeId {
    nodes.push(Node {
        plus: NO_NODE,
        ..Node::default()
    });
    // Invariant: nodes ≤ total filter levels + 1, bounded by MAX_SCOPES × filters × levels.
    (nodes.len() - 1) as NodeId
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic_filter::tests::{filter_strategy, reference_matches, topic_strategy};
    use proptest::prelude::*;

    fn compile(scopes: &[&[&str]]) -> ScopeMatcher {
        let parsed: Vec<Vec<TopicFilter>> = scopes
            .iter()
            .map(|fs| fs.iter().map(|f| TopicFilter::parse(f).unwrap()).collect())
            .collect();
        ScopeMatcher::new(parsed.iter().map(Vec::as_slice))
    }

    fn matched(m: &mut ScopeMatcher, topic: &str) -> Vec<usize> {
        let n = m.matched.words.len() * 64;
        let bits = m.match_topic(topic).clone();
        (0..n).filter(|&i| bits.contains(i)).collect()
    }

    #[test]
    fn tc20_holds_for_the_trie() {
        for &(filter, topic, expected) in crate::topic_filter::TC20 {
            let mut m = compile(&[&[filter]]);
            assert_eq!(
                !matched(&mut m, topic).is_empty(),
                expected,
                "{filter} vs {topic}"
            );
        }
    }

    #[test]
    fn a_topic_reports_every_scope_it_falls_in() {
        let mut m = compile(&[
            &["device/+/auth"],
            &["device/#"],
            &["telemetry/x", "device/a/auth"],
            &["#"],
            &[],
        ]);
        assert_eq!(matched(&mut m, "device/a/auth"), vec![0, 1, 2, 3]);
        assert_eq!(matched(&mut m, "device/b/auth"), vec![0, 1, 3]);
        assert_eq!(matched(&mut m, "telemetry/x"), vec![2, 3]);
        assert_eq!(matched(&mut m, "device"), vec![1, 3]);
        assert_eq!(matched(&mut m, "$aws/things/t"), Vec::<usize>::new());
        assert_eq!(matched(&mut m, ""), Vec::<usize>::new());
    }

    #[test]
    fn shared_prefixes_share_nodes() {
        let m = compile(&[&["a/b/c", "a/b/d"], &["a/b/#", "a/+/c"]]);
        // root, a, a/b, a/b/c, a/b/d, a/+, a/+/c
        assert_eq!(m.node_count(), 7);
    }

    #[test]
    fn more_than_64_scopes_use_several_words() {
        let filters: Vec<String> = (0..130).map(|i| format!("t/{i}")).collect();
        let parsed: Vec<Vec<TopicFilter>> = filters
            .iter()
            .map(|f| vec![TopicFilter::parse(f).unwrap()])
            .collect();
        let mut m = ScopeMatcher::new(parsed.iter().map(Vec::as_slice));
        assert_eq!(matched(&mut m, "t/129"), vec![129]);
        assert_eq!(matched(&mut m, "t/64"), vec![64]);
    }

    proptest! {
        #[test]
        fn the_trie_agrees_with_the_reference_matcher(
            filters in prop::collection::vec(filter_strategy(), 1..12),
            topics in prop::collection::vec(topic_strategy(), 1..12),
        ) {
            // One scope per filter, so each bit is one filter's verdict.
            let parsed: Vec<Vec<TopicFilter>> = filters
                .iter()
                .map(|f| vec![TopicFilter::parse(f).unwrap()])
                .collect();
            let mut m = ScopeMatcher::new(parsed.iter().map(Vec::as_slice));
            for topic in &topics {
                let bits = m.match_topic(topic).clone();
                for (i, f) in filters.iter().enumerate() {
                    prop_assert_eq!(bits.contains(i), reference_matches(f, topic), "{} vs {}", f, topic);
                    prop_assert_eq!(bits.contains(i), parsed[i][0].matches(topic));
                }
            }
        }
    }
}
