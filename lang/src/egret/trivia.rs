//! Comments of a `.egret` file, attached to the AST nodes they describe.
//!
//! The AST has no room for comments, so they live beside it, keyed by the
//! span start of an AST node (the *anchor*):
//!
//! | comment | attached to | anchor |
//! |---|---|---|
//! | own lines before `policy` | the policy (leading) | `policy.span` |
//! | end of the `policy NAME {` line | the policy line (trailing) | `policy.span` |
//! | own lines before a statement, or inside it | the statement (leading) | first AST node of the statement |
//! | end of a statement's last line | the statement (trailing) | first AST node of the statement |
//! | own lines before `}` | the end of the body | `policy.span` |
//! | end of the `}` line | the `}` line (trailing) | `policy.span` |
//! | after the last policy | the end of the file | — |
//!
//! The first AST node of a statement is the selector item of `select`, the
//! first CIDR of `to`/`except`, the gateway of `via`. Blank lines are kept
//! only after comments that lead a policy or end the file (file headers,
//! commented-out blocks); everything else is laid out canonically.

use crate::source::Span;
use std::collections::BTreeMap;

/// Where a comment hangs: file and byte offset of an AST node's span start.
pub type Anchor = (u32, u32);

pub(crate) fn anchor(span: Span) -> Anchor {
    (span.file.0, span.start)
}

/// One `#` comment as written (including the `#`, without trailing whitespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub text: String,
    /// A blank line follows the comment in the source.
    pub blank_after: bool,
}

/// The comments of one or more parsed files, keyed by anchor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comments {
    pub(crate) leading: BTreeMap<Anchor, Vec<Comment>>,
    pub(crate) trailing: BTreeMap<Anchor, Vec<Comment>>,
    pub(crate) body_end: BTreeMap<Anchor, Vec<Comment>>,
    pub(crate) close_trailing: BTreeMap<Anchor, Vec<Comment>>,
    pub(crate) file_end: Vec<Comment>,
}

impl Comments {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many comments are attached.
    pub fn len(&self) -> usize {
        let maps = [&self.leading, &self.trailing, &self.body_end, &self.close_trailing];
        maps.iter().flat_map(|m| m.values()).map(Vec::len).sum::<usize>() + self.file_end.len()
    }

    /// Adds the comments of another file.
    pub fn extend(&mut self, other: Comments) {
        for (mine, theirs) in [
            (&mut self.leading, other.leading),
            (&mut self.trailing, other.trailing),
            (&mut self.body_end, other.body_end),
            (&mut self.close_trailing, other.close_trailing),
        ] {
            for (k, v) in theirs {
                mine.entry(k).or_default().extend(v);
            }
        }
        self.file_end.extend(other.file_end);
    }

    pub(crate) fn leading(&self, span: Span) -> &[Comment] {
        self.leading.get(&anchor(span)).map_or(&[], Vec::as_slice)
    }
    pub(crate) fn trailing(&self, span: Span) -> &[Comment] {
        self.trailing.get(&anchor(span)).map_or(&[], Vec::as_slice)
    }
    pub(crate) fn body_end(&self, span: Span) -> &[Comment] {
        self.body_end.get(&anchor(span)).map_or(&[], Vec::as_slice)
    }
    pub(crate) fn close_trailing(&self, span: Span) -> &[Comment] {
        self.close_trailing.get(&anchor(span)).map_or(&[], Vec::as_slice)
    }
    pub(crate) fn file_end(&self) -> &[Comment] {
        &self.file_end
    }
}
