//! Source files and byte spans.
//!
//! Every AST node carries a [`Span`]: a file and a half-open byte range into
//! that file's text. The [`SourceMap`] owns the texts so diagnostics can be
//! rendered long after parsing.

use std::fmt;

/// Index of a file in a [`SourceMap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FileId(pub u32);

/// A half-open byte range `[start, end)` in one source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Span {
    pub file: FileId,
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(file: FileId, start: usize, end: usize) -> Span {
        Span { file, start: start as u32, end: end.max(start) as u32 }
    }

    /// The smallest span covering both (same file assumed; `self`'s file wins).
    pub fn to(self, other: Span) -> Span {
        Span { file: self.file, start: self.start.min(other.start), end: self.end.max(other.end) }
    }

    pub fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// A value with the span it was read from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

impl<T> Spanned<T> {
    pub fn new(value: T, span: Span) -> Self {
        Spanned { value, span }
    }
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Spanned<U> {
        Spanned { value: f(self.value), span: self.span }
    }
}

impl<T: fmt::Display> fmt::Display for Spanned<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// One loaded file.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
}

/// All files read in one run. Files are only ever added, so a [`FileId`]
/// stays valid for the life of the map.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
    /// Each file's line start offsets, so [`SourceMap::line_col`] costs a
    /// binary search and one line, not a scan from the file's start.
    line_starts: Vec<Vec<usize>>,
}

impl SourceMap {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, name: impl Into<String>, text: impl Into<String>) -> FileId {
        let text: String = text.into();
        let starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        self.files.push(SourceFile { name: name.into(), text });
        self.line_starts.push(starts);
        FileId((self.files.len() - 1) as u32)
    }

    pub fn get(&self, id: FileId) -> Option<&SourceFile> {
        self.files.get(id.0 as usize)
    }

    pub fn name(&self, id: FileId) -> &str {
        self.get(id).map_or("<unknown>", |f| f.name.as_str())
    }

    pub fn text(&self, id: FileId) -> &str {
        self.get(id).map_or("", |f| f.text.as_str())
    }

    /// The text a span covers (empty when out of range).
    pub fn slice(&self, span: Span) -> &str {
        self.text(span.file).get(span.range()).unwrap_or("")
    }

    pub fn files(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files.iter().enumerate().map(|(i, f)| (FileId(i as u32), f))
    }

    /// The text of 1-based line `line` of `file`, without its line break;
    /// `None` past the last line. A binary-search-free lookup: the line starts
    /// are kept.
    pub fn line(&self, file: FileId, line: usize) -> Option<&str> {
        let text = self.text(file);
        let starts = self.line_starts.get(file.0 as usize)?;
        let start = *starts.get(line.checked_sub(1)?)?;
        let end = starts.get(line).map_or(text.len(), |&next| next - 1);
        let l = text.get(start..end)?;
        Some(l.strip_suffix('\r').unwrap_or(l))
    }

    /// 1-based (line, column) of a byte offset; column counts characters.
    pub fn line_col(&self, file: FileId, offset: u32) -> (usize, usize) {
        let text = self.text(file);
        let offset = (offset as usize).min(text.len());
        let offset = floor_char_boundary(text, offset);
        let starts = self.line_starts.get(file.0 as usize).map_or(&[0][..], Vec::as_slice);
        // the last line starting at or before `offset`
        let line = starts.partition_point(|&s| s <= offset).max(1);
        let line_start = starts[line - 1].min(offset);
        let col = text[line_start..offset].chars().count() + 1;
        (line, col)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::SourceMap;

    #[test]
    fn lines_are_looked_up_by_number_without_their_breaks() {
        let mut m = SourceMap::new();
        let f = m.add("a.yaml", "one\r\ntwo\n\nfour");
        assert_eq!(m.line(f, 0), None);
        assert_eq!(m.line(f, 1), Some("one"));
        assert_eq!(m.line(f, 2), Some("two"));
        assert_eq!(m.line(f, 3), Some(""));
        assert_eq!(m.line(f, 4), Some("four"));
        assert_eq!(m.line(f, 5), None);
        assert_eq!(m.line_col(f, 5), (2, 1));
    }
}
