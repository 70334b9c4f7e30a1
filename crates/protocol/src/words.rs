//! ExecuteCommand's `command` string, split into words as a POSIX shell
//! splits them, without running a shell: `berth exec` joins its arguments
//! with [`quote`], the server splits them with [`split`], and the agent runs
//! the words directly (no `sh -c`, so no pipes, redirections, variables or
//! globs unless the command is itself a shell: `sh -c 'a | b'`).
//!
//! The rules are those of `sh` (and of the shell-quote splitting AWS's exec
//! agent uses): blanks (space, tab, newline) separate words; `'…'` keeps
//! everything literally; `"…"` keeps everything but `\` before one of
//! `` $ ` " \ `` and newline, which it escapes; outside quotes `\` escapes
//! the next character, and `\` before a newline joins the lines. Nothing is
//! expanded and `#` starts no comment. An unterminated quote or a trailing
//! `\` is an error.

/// Why a command string cannot be split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitError {
    UnterminatedSingleQuote,
    UnterminatedDoubleQuote,
    TrailingBackslash,
}

impl std::fmt::Display for SplitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SplitError::UnterminatedSingleQuote => "a single quote is not closed",
            SplitError::UnterminatedDoubleQuote => "a double quote is not closed",
            SplitError::TrailingBackslash => "the command ends with a backslash",
        })
    }
}

impl std::error::Error for SplitError {}

/// Splits a command line into its words.
pub fn split(line: &str) -> Result<Vec<String>, SplitError> {
    let mut words = Vec::new();
    let mut word = String::new();
    // Whether a word is open (`''` makes an empty word).
    let mut open = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if open {
                    words.push(std::mem::take(&mut word));
                    open = false;
                }
            }
            '\'' => {
                open = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(SplitError::UnterminatedSingleQuote),
                    }
                }
            }
            '"' => {
                open = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('\n') => {}
                            Some(c @ ('$' | '`' | '"' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(SplitError::UnterminatedDoubleQuote),
                        },
                        Some(c) => word.push(c),
                        None => return Err(SplitError::UnterminatedDoubleQuote),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => {
                    open = true;
                    word.push(c);
                }
                None => return Err(SplitError::TrailingBackslash),
            },
            c => {
                open = true;
                word.push(c);
            }
        }
    }
    if open {
        words.push(word);
    }
    Ok(words)
}

/// Quotes one word so that [`split`] (and `sh`) reads it back unchanged.
pub fn quote_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '-' | '_' | '.' | '/' | ':' | '=' | '+' | ',' | '@' | '%')
        });
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r#"'\''"#))
    }
}

/// Joins words into one command line that [`split`] turns back into them.
pub fn quote<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| quote_word(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Vec<String> {
        split(line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(ok("/bin/sh"), ["/bin/sh"]);
        assert_eq!(ok("  ls   -l\t/tmp\n"), ["ls", "-l", "/tmp"]);
        assert_eq!(
            ok("sh -c 'echo $HOME | wc -c'"),
            ["sh", "-c", "echo $HOME | wc -c"]
        );
        assert_eq!(ok(r#"echo "a \"b\" \$c \n""#), ["echo", r#"a "b" $c \n"#]);
        assert_eq!(ok(r"echo a\ b \'c"), ["echo", "a b", "'c"]);
        assert_eq!(ok("echo '' \"\" x"), ["echo", "", "", "x"]);
        assert_eq!(ok("a'b'\"c\"d"), ["abcd"]);
        assert_eq!(ok("echo one\\\ntwo"), ["echo", "onetwo"]);
        assert_eq!(
            ok("echo # not a comment"),
            ["echo", "#", "not", "a", "comment"]
        );
        assert_eq!(ok("   "), Vec::<String>::new());
        assert_eq!(ok("héllo wörld"), ["héllo", "wörld"]);
    }

    #[test]
    fn refuses_what_a_shell_would() {
        assert_eq!(split("echo 'x"), Err(SplitError::UnterminatedSingleQuote));
        assert_eq!(split("echo \"x"), Err(SplitError::UnterminatedDoubleQuote));
        assert_eq!(
            split("echo \"x\\"),
            Err(SplitError::UnterminatedDoubleQuote)
        );
        assert_eq!(split("echo x\\"), Err(SplitError::TrailingBackslash));
    }

    #[test]
    fn quoting_round_trips() {
        let cases: &[&[&str]] = &[
            &["sh", "-c", "echo $((6*7)); exit 3"],
            &[
                "printf",
                "%s\n",
                "it's",
                "",
                " lead",
                "tab\there",
                "\\",
                "\"q\"",
            ],
            &["a=b", "x,y", "user@host:/p"],
            &["ünïcode", "*", "?", "~", "#"],
        ];
        for words in cases {
            let line = quote(words);
            assert_eq!(ok(&line), *words, "{line}");
        }
        assert_eq!(quote(&["ls", "-l"]), "ls -l");
        assert_eq!(quote_word("it's"), r#"'it'\''s'"#);
    }

    proptest::proptest! {
        #[test]
        fn any_words_round_trip(words in proptest::collection::vec(".{0,12}", 0..6)) {
            proptest::prop_assert_eq!(split(&quote(&words)).ok(), Some(words));
        }

        #[test]
        fn any_line_splits_or_errors(line in ".{0,40}") {
            let _ = split(&line);
        }
    }
}
