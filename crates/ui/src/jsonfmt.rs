//! Re-indents JSON text without parsing it into values: it works on a
//! truncated prefix (a dataclip preview) and keeps keys in their order.

/// Pretty-prints JSON text with two-space indentation. Input that is not
/// JSON comes out with its characters intact (only whitespace outside
/// strings changes).
pub fn pretty(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    let mut depth: usize = 0;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = text.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        for _ in 0..depth.min(64) {
            out.push_str("  ");
        }
    };
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                // Keep empty containers on one line.
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                if matches!(chars.peek(), Some('}') | Some(']')) {
                    if let Some(close) = chars.next() {
                        out.push(close);
                    }
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::pretty;

    #[test]
    fn indents_and_keeps_strings_and_key_order() {
        let s = pretty(r#"{"b":1,"a":[true,{"x":"y, {z}: \"q\""}],"e":{}}"#);
        assert_eq!(
            s,
            "{\n  \"b\": 1,\n  \"a\": [\n    true,\n    {\n      \"x\": \"y, {z}: \\\"q\\\"\"\n    }\n  ],\n  \"e\": {}\n}"
        );
    }

    #[test]
    fn a_truncated_prefix_still_formats() {
        assert_eq!(
            pretty(r#"{"data":{"k":"abc"#),
            "{\n  \"data\": {\n    \"k\": \"abc"
        );
    }
}
