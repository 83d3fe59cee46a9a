//! Which methods each path answers, from the OpenAPI document: a request for a known path with
//! another method gets 405 `method_not_allowed` with `Allow` (and a CORS preflight that CORS does
//! not answer, the same), not 404.

use utoipa::openapi::OpenApi;
use utoipa::openapi::path::HttpMethod;

enum Segment {
    Literal(String),
    /// `{id}`: any one segment.
    Param,
}

/// The route table: each path template with its `Allow` value.
pub struct Methods(Vec<(Vec<Segment>, String)>);

impl Methods {
    pub fn from_doc(doc: &OpenApi) -> Self {
        let order = [
            (HttpMethod::Get, "GET"),
            (HttpMethod::Post, "POST"),
            (HttpMethod::Put, "PUT"),
            (HttpMethod::Patch, "PATCH"),
            (HttpMethod::Delete, "DELETE"),
        ];
        let routes = doc
            .paths
            .paths
            .iter()
            .map(|(template, item)| {
                let segments = template
                    .split('/')
                    .map(|s| {
                        if s.starts_with('{') && s.ends_with('}') {
                            Segment::Param
                        } else {
                            Segment::Literal(s.to_owned())
                        }
                    })
                    .collect();
                let allow: Vec<&str> = order
                    .iter()
                    .filter(|(m, _)| operation(item, m))
                    .map(|(_, name)| *name)
                    .collect();
                (segments, allow.join(", "))
            })
            .collect();
        Self(routes)
    }

    /// The `Allow` value of the route `path` matches, if any.
    pub fn allowed(&self, path: &str) -> Option<&str> {
        let parts: Vec<&str> = path.split('/').collect();
        self.0
            .iter()
            .find(|(segments, _)| {
                segments.len() == parts.len()
                    && segments.iter().zip(&parts).all(|(s, p)| match s {
                        Segment::Literal(l) => l == p,
                        Segment::Param => !p.is_empty(),
                    })
            })
            .map(|(_, allow)| allow.as_str())
    }
}

fn operation(item: &utoipa::openapi::PathItem, method: &HttpMethod) -> bool {
    match method {
        HttpMethod::Get => item.get.is_some(),
        HttpMethod::Post => item.post.is_some(),
        HttpMethod::Put => item.put.is_some(),
        HttpMethod::Patch => item.patch.is_some(),
        HttpMethod::Delete => item.delete.is_some(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::Methods;

    #[test]
    fn known_paths_list_their_methods() {
        let methods = Methods::from_doc(&crate::app::openapi_document());
        assert_eq!(methods.allowed("/v1/chat/completions"), Some("POST"));
        assert_eq!(
            methods.allowed("/api/v1/keys/abc"),
            Some("GET, PATCH, DELETE")
        );
        assert_eq!(methods.allowed("/api/v1/keys/abc/rotate"), Some("POST"));
        assert_eq!(methods.allowed("/api/v1/nothing"), None);
        assert_eq!(methods.allowed("/api/v1/keys//rotate"), None);
    }
}
