//! The pattern language of the cluster query language's `matches` (`=~`) and
//! `not_matches` (`!~`) operators.
//!
//! ECS documents these patterns as Java regular expressions matched against the
//! whole value (Java's `Pattern.matches`): `t2.*` selects `t2.small` and
//! `t2.micro`. berth implements the subset that placement expressions use, with
//! no dependency: literals, `.`, character classes (`[a-z0-9]`, `[^ab]`, and the
//! escapes `\d \D \w \W \s \S` inside and outside classes), escaped
//! metacharacters (`\.`, `\*`, ...), the quantifiers `*`, `+` and `?` (greedy),
//! alternation with `|`, and `^`/`$` at the ends (redundant, since the match is
//! always whole). Groups `( )`, counted repetition `{n,m}`, lazy or possessive
//! quantifiers, back-references and class intersections are refused when the
//! expression is parsed, with the position of the construct, rather than being
//! misread.
//!
//! Matching is a backtracking walk over the compiled pieces; it never
//! allocates.

/// A compiled pattern: alternatives, each a sequence of quantified atoms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pattern {
    alternatives: Vec<Vec<Piece>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Piece {
    atom: Atom,
    min: u32,
    /// `None`: unbounded.
    max: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Atom {
    Char(char),
    Any,
    Class {
        negated: bool,
        items: Vec<ClassItem>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClassItem {
    Range(char, char),
    Digit(bool),
    Word(bool),
    Space(bool),
}

impl ClassItem {
    fn contains(self, c: char) -> bool {
        match self {
            ClassItem::Range(lo, hi) => lo <= c && c <= hi,
            ClassItem::Digit(neg) => c.is_ascii_digit() != neg,
            ClassItem::Word(neg) => (c.is_ascii_alphanumeric() || c == '_') != neg,
            ClassItem::Space(neg) => c.is_whitespace() != neg,
        }
    }
}

impl Atom {
    fn matches(&self, c: char) -> bool {
        match self {
            Atom::Char(x) => *x == c,
            Atom::Any => c != '\n',
            Atom::Class { negated, items } => items.iter().any(|i| i.contains(c)) != *negated,
        }
    }
}

/// Why a pattern was refused: the offset (in characters, from 0) within the
/// pattern and what was wrong there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PatternError {
    pub offset: usize,
    pub message: String,
}

fn err(offset: usize, message: impl Into<String>) -> PatternError {
    PatternError {
        offset,
        message: message.into(),
    }
}

impl Pattern {
    /// Compiles `src`, or says which construct at which offset is not supported.
    pub(crate) fn compile(src: &str) -> Result<Pattern, PatternError> {
        let chars: Vec<char> = src.chars().collect();
        let mut alternatives = vec![Vec::new()];
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let start = i;
            let atom = match c {
                '|' => {
                    alternatives.push(Vec::new());
                    i += 1;
                    continue;
                }
                '^' if start == 0 || chars[start - 1] == '|' => {
                    i += 1;
                    continue;
                }
                '$' if i + 1 == chars.len() || chars[i + 1] == '|' => {
                    i += 1;
                    continue;
                }
                '(' | ')' => return Err(err(i, "groups '( )' are not supported in patterns")),
                '{' | '}' => {
                    return Err(err(
                        i,
                        "counted repetition '{n,m}' is not supported in patterns",
                    ))
                }
                '*' | '+' | '?' => return Err(err(i, format!("'{c}' has nothing to repeat"))),
                '^' | '$' => {
                    return Err(err(i, format!("'{c}' is only allowed at the start or end")))
                }
                '.' => {
                    i += 1;
                    Atom::Any
                }
                '[' => {
                    let (atom, next) = class(&chars, i)?;
                    i = next;
                    atom
                }
                '\\' => {
                    let (item, next) = escape(&chars, i)?;
                    i = next;
                    match item {
                        ClassItem::Range(a, _) => Atom::Char(a),
                        other => Atom::Class {
                            negated: false,
                            items: vec![other],
                        },
                    }
                }
                _ => {
                    i += 1;
                    Atom::Char(c)
                }
            };
            let (min, max) = match chars.get(i) {
                Some('*') => (0, None),
                Some('+') => (1, None),
                Some('?') => (0, Some(1)),
                _ => (1, Some(1)),
            };
            if max != Some(1) || min == 0 {
                i += 1;
                if let Some(q @ ('?' | '+')) = chars.get(i) {
                    return Err(err(
                        i,
                        format!("lazy or possessive quantifiers ('{q}' after a quantifier) are not supported"),
                    ));
                }
                if let Some(q @ ('*' | '{')) = chars.get(i) {
                    return Err(err(i, format!("'{q}' has nothing to repeat")));
                }
            }
            if let Some(last) = alternatives.last_mut() {
                last.push(Piece { atom, min, max });
            }
        }
        Ok(Pattern { alternatives })
    }

    /// Whether the pattern matches the whole of `text`.
    pub(crate) fn is_match(&self, text: &str) -> bool {
        self.alternatives
            .iter()
            .any(|pieces| match_here(pieces, text))
    }
}

/// `\x` at `chars[i]`: the class item (or literal, as a one-char range) and the next offset.
fn escape(chars: &[char], i: usize) -> Result<(ClassItem, usize), PatternError> {
    let Some(&c) = chars.get(i + 1) else {
        return Err(err(i, "a pattern cannot end with '\\'"));
    };
    let item = match c {
        'd' => ClassItem::Digit(false),
        'D' => ClassItem::Digit(true),
        'w' => ClassItem::Word(false),
        'W' => ClassItem::Word(true),
        's' => ClassItem::Space(false),
        'S' => ClassItem::Space(true),
        't' => ClassItem::Range('\t', '\t'),
        'n' => ClassItem::Range('\n', '\n'),
        c if c.is_ascii_alphanumeric() => {
            return Err(err(
                i,
                format!("the escape '\\{c}' is not supported in patterns"),
            ))
        }
        c => ClassItem::Range(c, c),
    };
    Ok((item, i + 2))
}

/// A class `[...]` starting at `chars[i]`: the atom and the offset after `]`.
fn class(chars: &[char], start: usize) -> Result<(Atom, usize), PatternError> {
    let mut i = start + 1;
    let negated = chars.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut items = Vec::new();
    let mut first = true;
    loop {
        let Some(&c) = chars.get(i) else {
            return Err(err(start, "unclosed character class '['"));
        };
        if c == ']' && !first {
            return Ok((Atom::Class { negated, items }, i + 1));
        }
        first = false;
        let (lo, next) = match c {
            '[' => return Err(err(i, "nested character classes are not supported")),
            '&' if chars.get(i + 1) == Some(&'&') => {
                return Err(err(i, "class intersection '&&' is not supported"))
            }
            '\\' => {
                let (item, next) = escape(chars, i)?;
                match item {
                    ClassItem::Range(a, _) => (a, next),
                    other => {
                        items.push(other);
                        i = next;
                        continue;
                    }
                }
            }
            c => (c, i + 1),
        };
        i = next;
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&n| n != ']') {
            let (hi, next) = match chars[i + 1] {
                '\\' => match escape(chars, i + 1)? {
                    (ClassItem::Range(a, _), next) => (a, next),
                    _ => return Err(err(i + 1, "a range cannot end with a class escape")),
                },
                '[' => return Err(err(i + 1, "nested character classes are not supported")),
                h => (h, i + 2),
            };
            if hi < lo {
                return Err(err(i, format!("the range '{lo}-{hi}' is out of order")));
            }
            items.push(ClassItem::Range(lo, hi));
            i = next;
        } else {
            items.push(ClassItem::Range(lo, lo));
        }
    }
}

/// Whether `pieces` match all of `text` (greedy, backtracking).
fn match_here(pieces: &[Piece], text: &str) -> bool {
    let Some((piece, rest)) = pieces.split_first() else {
        return text.is_empty();
    };
    // Take as many as allowed, then give back one at a time.
    let mut ends = text.char_indices();
    let mut taken = 0u32;
    let mut pos = 0usize;
    loop {
        if piece.max.is_some_and(|m| taken >= m) {
            break;
        }
        match ends.next() {
            Some((at, c)) if piece.atom.matches(c) => {
                pos = at + c.len_utf8();
                taken += 1;
            }
            _ => break,
        }
    }
    loop {
        if taken < piece.min {
            return false;
        }
        if match_here(rest, &text[pos..]) {
            return true;
        }
        if taken == 0 {
            return false;
        }
        match text[..pos].chars().next_back() {
            Some(c) => pos -= c.len_utf8(),
            None => return false,
        }
        taken -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        Pattern::compile(p).map(|p| p.is_match(t)).unwrap_or(false)
    }

    #[test]
    fn whole_match_semantics() {
        assert!(m("t2.*", "t2.small"));
        assert!(m("t2.*", "t2"));
        assert!(!m("t2.*", "xt2.small"));
        assert!(m("t2\\..*", "t2.micro"));
        assert!(!m("t2\\..*", "t2xmicro"));
        assert!(m("us-east-1[ab]", "us-east-1b"));
        assert!(!m("us-east-1[ab]", "us-east-1c"));
        assert!(m("[^x]+", "abc"));
        assert!(!m("[^x]+", "axc"));
        assert!(m("m5|c5", "c5"));
        assert!(m("\\d+\\.\\d+", "12.5"));
        assert!(m("a?b+c*", "bbb"));
        assert!(m("^g2.*$", "g2.2xlarge"));
        assert!(m("[a-c0-9_-]*", "a9_-c"));
    }

    #[test]
    fn unsupported_constructs_are_refused_with_offsets() {
        assert_eq!(Pattern::compile("(a|b)").map_err(|e| e.offset), Err(0));
        assert_eq!(Pattern::compile("ab{2}").map_err(|e| e.offset), Err(2));
        assert_eq!(Pattern::compile("a*?").map_err(|e| e.offset), Err(2));
        assert_eq!(Pattern::compile("*a").map_err(|e| e.offset), Err(0));
        assert_eq!(Pattern::compile("[ab").map_err(|e| e.offset), Err(0));
        assert_eq!(Pattern::compile("a\\k").map_err(|e| e.offset), Err(1));
    }
}
