//! Error plumbing shared by every module, and importing none: the boxed error type used where
//! a cause's type does not matter to the code, and [`ErrorChain`], how an error and its causes
//! are written to logs and readiness text.
//!
//! Logs print an error as its chain of `Display`s, `outer: cause: root cause`, never with
//! `Debug`: `Debug` output is for developers, may show internals, and drops nothing useful
//! that the chain does not say in words.

use std::error::Error;
use std::fmt;

/// Any error, sendable across tasks.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// Displays an error followed by each of its causes: `"cannot connect: tcp connect error:
/// Connection refused (os error 111)"`.
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// Only the causes of an error, for log lines that already print the error itself.
#[derive(Clone, Copy)]
pub struct Causes<'a>(pub &'a (dyn Error + 'static));

impl<'a> Causes<'a> {
    /// The causes of `error`, or `None` when it has none: a log field that would be empty is
    /// left out instead.
    pub fn of(error: &'a (dyn Error + 'static)) -> Option<Self> {
        error.source().map(|_| Causes(error))
    }
}

impl fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.source() {
            Some(first) => ErrorChain(first).fmt(f),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("cannot connect")
        }
    }

    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn the_chain_names_every_cause_in_order() {
        let e = Outer(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"));
        assert_eq!(ErrorChain(&e).to_string(), "cannot connect: refused");
        assert_eq!(Causes(&e).to_string(), "refused");
        let root = std::io::Error::other("alone");
        assert_eq!(ErrorChain(&root).to_string(), "alone");
        assert_eq!(Causes(&root).to_string(), "");
        assert!(Causes::of(&root).is_none());
        assert_eq!(Causes::of(&e).map(|c| c.to_string()).as_deref(), Some("refused"));
    }
}
