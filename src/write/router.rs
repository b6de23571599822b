//! (namespace, stream) of a record → the index of its catalog stream.

use std::collections::HashMap;

use crate::protocol::StreamDescriptor;

/// Looks up catalog streams by exact namespace and name (null matches null only).
pub struct Router {
    by_name: HashMap<String, Vec<(Option<String>, usize)>>,
}

impl Router {
    /// A router over the catalog's streams, in catalog order.
    pub fn new(streams: &[StreamDescriptor]) -> Self {
        let mut by_name: HashMap<String, Vec<(Option<String>, usize)>> = HashMap::new();
        for (i, s) in streams.iter().enumerate() {
            by_name
                .entry(s.name.clone())
                .or_default()
                .push((s.namespace.clone(), i));
        }
        Router { by_name }
    }

    /// The catalog index of the stream, if the catalog has it.
    pub fn route(&self, namespace: Option<&str>, name: &str) -> Option<usize> {
        self.by_name
            .get(name)?
            .iter()
            .find(|(ns, _)| ns.as_deref() == namespace)
            .map(|(_, i)| *i)
    }
}

impl Router {
    /// The catalog streams a STREAM_STATUS applies to: the exact match, or, when there is none and
    /// the status has no namespace, every catalog stream of that name.
    pub fn route_status(&self, namespace: Option<&str>, name: &str) -> Vec<usize> {
        if let Some(i) = self.route(namespace, name) {
            return vec![i];
        }
        match (namespace, self.by_name.get(name)) {
            (None, Some(all)) => all.iter().map(|(_, i)| *i).collect(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_match_only() {
        let d = |ns: Option<&str>, n: &str| StreamDescriptor {
            name: n.into(),
            namespace: ns.map(Into::into),
        };
        let r = Router::new(&[d(None, "a"), d(Some("x"), "a"), d(Some(""), "b")]);
        assert_eq!(r.route(None, "a"), Some(0));
        assert_eq!(r.route(Some("x"), "a"), Some(1));
        assert_eq!(r.route(Some("y"), "a"), None);
        assert_eq!(r.route(None, "b"), None);
        assert_eq!(r.route(Some(""), "b"), Some(2));
        assert_eq!(r.route_status(None, "a"), vec![0]);
        assert_eq!(r.route_status(None, "b"), vec![2]);
        assert_eq!(r.route_status(Some("z"), "b"), Vec::<usize>::new());
    }
}
