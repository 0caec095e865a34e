//! `application/x-www-form-urlencoded` bodies and query strings as a list of
//! pairs, so repeated keys (`ids=a&ids=b` from many checkboxes) survive.

/// A parsed form: pairs in the order the browser sent them.
#[derive(Debug, Default, Clone)]
pub struct FormData(Vec<(String, String)>);

impl FormData {
    pub fn parse(body: &[u8]) -> Self {
        FormData(
            form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `name`, if any.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of `name`, trimmed, or "" when absent.
    pub fn text(&self, name: &str) -> String {
        self.get(name).unwrap_or("").trim().to_string()
    }

    /// Every value of `name`, in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_are_kept_in_order() {
        let f = FormData::parse(b"ids=a&_csrf=x%2By&ids=b&name=+hi+");
        assert_eq!(f.all("ids"), vec!["a", "b"]);
        assert_eq!(f.get("_csrf"), Some("x+y"));
        assert_eq!(f.text("name"), "hi");
        assert_eq!(f.text("missing"), "");
    }
}
