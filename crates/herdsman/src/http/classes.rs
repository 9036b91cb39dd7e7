use std::sync::Arc;

use http::Request;

use crate::class::{Class, Classify};

/// Classifies HTTP requests by path pattern.
///
/// Patterns are matched segment by segment: a literal segment matches itself,
/// `{name}` matches any one segment, and a final `*` matches the rest of the
/// path (zero or more segments). The first matching pattern wins; requests no
/// pattern matches get [`Class::default()`].
///
/// ```
/// use herdsman::{class::{Class, Classify}, http::PathClasses};
/// use http::Request;
///
/// let classes = PathClasses::new()
///     .route("/api/active-users", "active-users")
///     .route("/api/boards/{board}/events", "board-events")
///     .route("/api/me/*", "me");
/// let class = |path: &str| classes.classify(&Request::get(path).body(()).unwrap());
/// assert_eq!(class("/api/boards/7/events?since=3"), Class::new("board-events"));
/// assert_eq!(class("/api/me/settings"), Class::new("me"));
/// assert_eq!(class("/api/boards/7"), Class::default());
/// ```
#[derive(Debug, Clone, Default)]
pub struct PathClasses {
    routes: Arc<[(Vec<Segment>, Class)]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
    Rest,
}

impl PathClasses {
    /// No patterns: every request is in the default class.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a pattern and its class.
    pub fn route(self, pattern: &str, class: impl Into<Class>) -> Self {
        let segments = split(pattern)
            .map(|s| match s {
                "*" => Segment::Rest,
                s if s.starts_with('{') && s.ends_with('}') => Segment::Param,
                s => Segment::Literal(s.to_owned()),
            })
            .collect();
        let mut routes = self.routes.to_vec();
        routes.push((segments, class.into()));
        PathClasses {
            routes: routes.into(),
        }
    }

    /// The class of a path (without query).
    pub fn classify_path(&self, path: &str) -> Class {
        self.routes
            .iter()
            .find(|(pattern, _)| matches(pattern, path))
            .map_or_else(Class::default, |(_, class)| class.clone())
    }
}

fn split(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

fn matches(pattern: &[Segment], path: &str) -> bool {
    let mut segments = split(path);
    for part in pattern {
        match part {
            Segment::Rest => return true,
            Segment::Param => {
                if segments.next().is_none() {
                    return false;
                }
            }
            Segment::Literal(lit) => {
                if segments.next() != Some(lit.as_str()) {
                    return false;
                }
            }
        }
    }
    segments.next().is_none()
}

impl<B> Classify<Request<B>> for PathClasses {
    fn classify(&self, req: &Request<B>) -> Class {
        self.classify_path(req.uri().path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_segment_by_segment() {
        let c = PathClasses::new()
            .route("/a/{id}", "one")
            .route("/a/{id}/b", "two")
            .route("/files/*", "files");
        assert_eq!(c.classify_path("/a/1").as_str(), "one");
        assert_eq!(c.classify_path("/a/1/").as_str(), "one");
        assert_eq!(c.classify_path("/a/1/b").as_str(), "two");
        assert_eq!(c.classify_path("/a").as_str(), "default");
        assert_eq!(c.classify_path("/a/1/c").as_str(), "default");
        assert_eq!(c.classify_path("/files").as_str(), "files");
        assert_eq!(c.classify_path("/files/x/y").as_str(), "files");
        assert_eq!(c.classify_path("/").as_str(), "default");
    }

    #[test]
    fn the_first_matching_pattern_wins() {
        let c = PathClasses::new()
            .route("/a/*", "wide")
            .route("/a/b", "narrow");
        assert_eq!(c.classify_path("/a/b").as_str(), "wide");
    }
}
