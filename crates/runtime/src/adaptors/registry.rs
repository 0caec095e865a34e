//! The table of built-in adaptors and adaptor-spec resolution.

use super::Adaptor;

/// Shared implementation of language-common, parameterised by the adaptor
/// tail that follows it (see `crates/runtime/adaptors/README.md`).
macro_rules! with_common_core {
    ($tail:literal) => {
        concat!(
            include_str!("../../adaptors/common-core.js"),
            "\n",
            include_str!($tail)
        )
    };
}

const COMMON_EXPORTS: &[&str] = &[
    "_",
    "alterState",
    "arrayToString",
    "as",
    "asData",
    "assert",
    "beta",
    "chunk",
    "combine",
    "composeNextState",
    "cursor",
    "dataPath",
    "dataValue",
    "dateFns",
    "debug",
    "each",
    "execute",
    "field",
    "fields",
    "fn",
    "fnIf",
    "group",
    "http",
    "humanProper",
    "index",
    "join",
    "jsonValue",
    "lastReferenceValue",
    "log",
    "map",
    "merge",
    "parseCsv",
    "referencePath",
    "scrubEmojis",
    "source",
    "sourceValue",
    "splitKeys",
    "toArray",
    "util",
    "validate",
];

/// language-http 7.2.10 re-exports only part of its bundled common 3.3.1.
const HTTP_EXPORTS: &[&str] = &[
    "alterState",
    "arrayToString",
    "as",
    "chunk",
    "combine",
    "cursor",
    "dataPath",
    "dataValue",
    "dateFns",
    "del",
    "each",
    "execute",
    "field",
    "fields",
    "fn",
    "fnIf",
    "get",
    "group",
    "humanProper",
    "lastReferenceValue",
    "map",
    "merge",
    "parseCsv",
    "parseXML",
    "patch",
    "post",
    "put",
    "request",
    "scrubEmojis",
    "sourceValue",
    "splitKeys",
    "toArray",
    "util",
];

static ADAPTORS: [Adaptor; 2] = [
    Adaptor {
        name: "@openfn/language-common",
        version: "3.3.4",
        source: with_common_core!("../../adaptors/common.js"),
        exports: COMMON_EXPORTS,
    },
    Adaptor {
        name: "@openfn/language-http",
        version: "7.2.10",
        source: with_common_core!("../../adaptors/http.js"),
        exports: HTTP_EXPORTS,
    },
];

/// Every adaptor built into this binary.
pub fn available() -> &'static [Adaptor] {
    &ADAPTORS
}

/// The spec named an adaptor that is not built in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownAdaptor {
    pub spec: String,
}

impl std::fmt::Display for UnknownAdaptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = ADAPTORS.iter().map(|a| a.name).collect();
        write!(
            f,
            "adaptor {:?} is not available; gabbro provides: {} (any version of these resolves to gabbro's own)",
            self.spec,
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownAdaptor {}

/// Resolve an adaptor spec such as `@openfn/language-http@7`,
/// `@openfn/language-common@latest` or a bare package name. Any version
/// (or none) resolves to the built-in adaptor of that package.
///
/// Also accepted, as the OpenFn CLI accepts them: the short forms `http` /
/// `language-http` (→ `@openfn/language-http`), and a local-path override
/// suffix `=<path>` (ignored: the built-in adaptor is used).
pub fn resolve(spec: &str) -> Result<&'static Adaptor, UnknownAdaptor> {
    let trimmed = spec.trim();
    let without_path = trimmed.split_once('=').map_or(trimmed, |(s, _)| s);
    let name = package_name(without_path);
    let wanted = if name.starts_with('@') {
        name.to_string()
    } else if name.starts_with("language-") {
        format!("@openfn/{name}")
    } else {
        format!("@openfn/language-{name}")
    };
    ADAPTORS
        .iter()
        .find(|a| a.name == wanted)
        .ok_or_else(|| UnknownAdaptor {
            spec: spec.to_string(),
        })
}

/// The package part of `name@version`; scoped names start with `@`, so the
/// version separator is the last `@` after the first character.
fn package_name(spec: &str) -> &str {
    match spec.rfind('@') {
        Some(i) if i > 0 => &spec[..i],
        _ => spec,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_version_of_a_builtin_resolves_to_ours() {
        for spec in [
            "@openfn/language-http@7",
            "@openfn/language-http@7.2.10",
            "@openfn/language-http@latest",
            "@openfn/language-http@6.0.0",
            "@openfn/language-http",
        ] {
            let a = resolve(spec).expect(spec);
            assert_eq!(a.name, "@openfn/language-http");
            assert_eq!(a.version, "7.2.10");
        }
        for spec in [
            "http",
            "http@7",
            "language-http@latest",
            "@openfn/language-http@7=/tmp/x",
        ] {
            assert_eq!(resolve(spec).expect(spec).name, "@openfn/language-http");
        }
        let a = resolve("@openfn/language-common@3.3.4").unwrap();
        assert_eq!(a.name, "@openfn/language-common");
        assert_eq!(
            resolve(" @openfn/language-common@latest ").unwrap().name,
            a.name
        );
    }

    #[test]
    fn unknown_adaptor_error_names_spec_and_lists_ours() {
        let err = resolve("@openfn/language-dhis2@4.0.0").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("@openfn/language-dhis2@4.0.0"), "{text}");
        assert!(text.contains("@openfn/language-common"), "{text}");
        assert!(text.contains("@openfn/language-http"), "{text}");
        // A prefix of a known name is not that adaptor.
        assert!(resolve("@openfn/language").is_err());
        assert!(resolve("@other/language-http").is_err());
        assert!(resolve("dhis2").is_err());
        assert!(resolve("").is_err());
    }

    #[test]
    fn export_lists_have_no_duplicates() {
        for a in available() {
            let mut names = a.exports.to_vec();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), a.exports.len(), "{}", a.name);
        }
    }
}
