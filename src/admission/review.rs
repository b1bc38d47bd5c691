//! The AdmissionReview wire format (`admission.k8s.io/v1`), as the API server sends and expects
//! it. Written here rather than borrowed so that `patch` is the base64 string the API server
//! reads and `warnings` can be set.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::object::slim::SlimObject;

/// A request body that is not a usable AdmissionReview.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

#[derive(Deserialize)]
struct Envelope<R> {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    kind: Option<String>,
    request: Option<R>,
}

/// The API group, version and kind of the object under review.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

/// The fields of `AdmissionRequest` that fluxgate reads (and forwards to the deciding replica).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    pub uid: String,
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    pub operation: Operation,
    #[serde(default)]
    pub object: Option<Value>,
    #[serde(default)]
    pub old_object: Option<Value>,
    #[serde(default, deserialize_with = "null_as_false")]
    pub dry_run: bool,
}

/// [`AdmissionRequest`] as `/validate` reads it: `object` and `oldObject` decoded through
/// [`SlimObject`], only the fields the rules read built (see [`crate::object::slim`]). A
/// HelmRelease's values, the managed fields' other entries and the status are skipped while
/// the body is parsed.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SlimRequest {
    uid: String,
    kind: GroupVersionKind,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    operation: Operation,
    #[serde(default)]
    object: Option<SlimObject>,
    #[serde(default)]
    old_object: Option<SlimObject>,
    #[serde(default, deserialize_with = "null_as_false")]
    dry_run: bool,
}

impl From<SlimRequest> for AdmissionRequest {
    fn from(r: SlimRequest) -> AdmissionRequest {
        AdmissionRequest {
            uid: r.uid,
            kind: r.kind,
            name: r.name,
            namespace: r.namespace,
            operation: r.operation,
            object: r.object.map(|o| o.0),
            old_object: r.old_object.map(|o| o.0),
            dry_run: r.dry_run,
        }
    }
}

fn null_as_false<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
}

/// A parsed AdmissionReview: its `apiVersion` (echoed in the response) and its request.
#[derive(Debug, Clone)]
pub struct AdmissionReview {
    pub api_version: String,
    pub request: AdmissionRequest,
}

impl AdmissionReview {
    /// Parses a request body. Anything that is not an AdmissionReview with a request and a uid
    /// is a [`BadRequest`] whose text says what is wrong.
    pub fn from_slice(body: &[u8]) -> Result<AdmissionReview, BadRequest> {
        Self::checked::<AdmissionRequest>(body)
    }

    /// [`AdmissionReview::from_slice`] keeping of the objects only what the rules read: what
    /// `/validate` needs (`/mutate` reads whole objects, its defaults may set any field).
    pub fn from_slice_slim(body: &[u8]) -> Result<AdmissionReview, BadRequest> {
        Self::checked::<SlimRequest>(body)
    }

    fn checked<R: serde::de::DeserializeOwned + Into<AdmissionRequest>>(
        body: &[u8],
    ) -> Result<AdmissionReview, BadRequest> {
        let envelope: Envelope<R> =
            serde_json::from_slice(body).map_err(|e| BadRequest(format!("body is not an AdmissionReview: {e}")))?;
        let api_version = envelope.api_version.unwrap_or_default();
        if !api_version.starts_with("admission.k8s.io/") {
            return Err(BadRequest(format!("apiVersion must be admission.k8s.io/v1, not {api_version:?}")));
        }
        if envelope.kind.as_deref() != Some("AdmissionReview") {
            return Err(BadRequest(format!(
                "kind must be AdmissionReview, not {:?}",
                envelope.kind.unwrap_or_default()
            )));
        }
        let request: AdmissionRequest =
            envelope.request.ok_or_else(|| BadRequest("AdmissionReview has no request".into()))?.into();
        if request.uid.is_empty() {
            return Err(BadRequest("request.uid is empty".into()));
        }
        Ok(AdmissionReview { api_version, request })
    }
}

/// The AdmissionReview sent back, borrowing from the [`Response`].
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'a str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusOut<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
}

/// `response.status` of a denial: a `metav1.Status`.
#[derive(Serialize)]
struct StatusOut<'a> {
    metadata: Empty,
    status: &'static str,
    code: u16,
    reason: &'static str,
    message: &'a str,
}

#[derive(Serialize)]
struct Empty {}

/// Longest warning the API server passes on unshortened.
pub const MAX_WARNING_CHARS: usize = 256;
/// Most warning text, all warnings together, one response may carry.
pub const MAX_WARNINGS_TOTAL: usize = 4096;

/// What the webhook answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Response {
    pub allowed: bool,
    /// The denial message (`status.message`), when denied.
    pub message: Option<String>,
    pub warnings: Vec<String>,
    /// JSON Patch operations, when the mutating webhook changes the object.
    pub patch: Option<Vec<Value>>,
}

impl Response {
    pub fn allow() -> Response {
        Response { allowed: true, ..Response::default() }
    }

    /// The AdmissionReview to send back for request `uid`, as the bytes sent: serialised from
    /// borrowed parts, with no JSON tree built in between.
    pub fn to_review_bytes(&self, api_version: &str, uid: &str) -> Vec<u8> {
        serde_json::to_vec(&self.wire(api_version, uid)).expect("a review serialises")
    }

    fn wire<'a>(&'a self, api_version: &'a str, uid: &'a str) -> ReviewOut<'a> {
        let status = (!self.allowed).then(|| StatusOut {
            metadata: Empty {},
            status: "Failure",
            code: 403,
            reason: "Forbidden",
            message: self.message.as_deref().unwrap_or_default(),
        });
        let patch = self.patch.as_ref().map(|ops| {
            let bytes = serde_json::to_vec(ops).expect("JSON values serialise");
            base64::engine::general_purpose::STANDARD.encode(bytes)
        });
        ReviewOut {
            api_version,
            kind: "AdmissionReview",
            response: ResponseOut {
                uid,
                allowed: self.allowed,
                status,
                warnings: fit_warnings(&self.warnings),
                patch_type: patch.as_ref().map(|_| "JSONPatch"),
                patch,
            },
        }
    }
}

/// Warnings as the API server accepts them: no control characters, each at most
/// [`MAX_WARNING_CHARS`] characters, all together at most [`MAX_WARNINGS_TOTAL`]. What does not
/// fit is summed up in a last warning.
pub fn fit_warnings(warnings: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut total = 0;
    for (i, w) in warnings.iter().enumerate() {
        let clean: String = w.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        let w = shorten(&clean, MAX_WARNING_CHARS);
        let left = warnings.len() - i - 1;
        // Keep room for the summary line if more would follow.
        let reserve = if left > 0 { 64 } else { 0 };
        if total + w.chars().count() + reserve > MAX_WARNINGS_TOTAL {
            let summary = format!("{} more fluxgate warnings not shown", warnings.len() - i);
            out.push(summary);
            break;
        }
        total += w.chars().count();
        out.push(w);
    }
    out
}

/// `s` cut to at most `max` characters, ending in an ellipsis when cut.
pub fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn warnings_are_cut_to_the_api_server_limits() {
        let long = "x".repeat(1000);
        let fitted = fit_warnings(&vec![long; 40]);
        assert!(fitted.iter().all(|w| w.chars().count() <= MAX_WARNING_CHARS));
        let total: usize = fitted.iter().map(|w| w.chars().count()).sum();
        assert!(total <= MAX_WARNINGS_TOTAL, "{total}");
        assert!(fitted.last().unwrap().ends_with("more fluxgate warnings not shown"));
        assert_eq!(fit_warnings(&["a\nb".to_string()]), vec!["a b".to_string()]);
    }

    #[test]
    fn non_reviews_are_bad_requests() {
        for body in [&b"not json"[..], b"{}", b"{\"apiVersion\":\"v1\",\"kind\":\"Pod\"}",
            b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}",
            b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"\",\"kind\":{},\"operation\":\"CREATE\"}}"]
        {
            assert!(AdmissionReview::from_slice(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn patch_is_a_base64_string() {
        let r = Response {
            allowed: true,
            patch: Some(vec![json!({"op": "add", "path": "/spec/wait", "value": true})]),
            ..Default::default()
        };
        let review: Value = serde_json::from_slice(&r.to_review_bytes("admission.k8s.io/v1", "u1")).unwrap();
        let patch = review["response"]["patch"].as_str().unwrap();
        let decoded = base64::engine::general_purpose::STANDARD.decode(patch).unwrap();
        assert_eq!(String::from_utf8(decoded).unwrap(), r#"[{"op":"add","path":"/spec/wait","value":true}]"#);
        assert_eq!(review["response"]["patchType"], "JSONPatch");
    }
}
