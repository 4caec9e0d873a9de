//! An error and its causes as one line, for logs and for messages that
//! leave the process (IPC errors, failure events). A leaf: every module may
//! use it, it uses none.

/// `err` and its sources, joined with ": ".
pub fn err_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open {path}")]
    struct Open {
        path: String,
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn every_cause_is_kept_in_order() {
        let err = Open {
            path: "/g/x".into(),
            source: std::io::Error::other("disk on fire"),
        };
        assert_eq!(err_chain(&err), "cannot open /g/x: disk on fire");
    }
}
