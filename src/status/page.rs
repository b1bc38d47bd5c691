//! The status page: one self-contained HTML document (no external assets, works offline) that
//! draws a [`StatusReport`] by waves, coloured by state, with the stuck objects and their root
//! causes first. The admin port serves it live at `GET /` (it refreshes itself from
//! `GET /status`); `fluxgate graph --format html` writes it for files, where objects have no
//! status.

use serde::Serialize;

use super::StatusReport;

/// The page's HTML, CSS and script; the data goes into its `application/json` block.
const TEMPLATE: &str = include_str!("page.html");
const DATA_MARKER: &str = "/*FLUXGATE_DATA*/";

#[derive(Serialize)]
struct PageData<'a> {
    title: &'a str,
    /// Live pages refresh from `status` and colour objects by state; file pages do neither.
    live: bool,
    /// Lines a person must act on, shown above the graphs (what the webhook configurations
    /// keep from taking effect); `/status` carries them too, so a refresh updates them.
    notices: &'a [String],
    #[serde(flatten)]
    report: &'a StatusReport,
}

/// Renders the page. `live` pages refresh from the `status` URL beside them.
pub fn render(report: &StatusReport, title: &str, live: bool) -> String {
    render_with_notices(report, title, live, &[])
}

/// [`render`] with lines a person must act on above the graphs.
pub fn render_with_notices(report: &StatusReport, title: &str, live: bool, notices: &[String]) -> String {
    let json = serde_json::to_string(&PageData { title, live, notices, report }).expect("report serialises");
    // Inside a <script> element `</script` ends it and `<!--` changes how it is parsed. Status
    // messages are written by controllers and users, so no `<` reaches the page raw (`<` can only
    // appear inside JSON strings, where `\u003c` means the same).
    let json = json.replace('<', "\\u003c");
    TEMPLATE.replacen(DATA_MARKER, &json, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::tests::ks;
    use crate::object::{FluxKind, ObjectKey};
    use crate::status::{ObjectStatus, ReadyCondition, analyze};
    use std::collections::HashMap;

    #[test]
    fn messages_cannot_close_the_data_block() {
        let status = ObjectStatus {
            ready: Some(Box::new(ReadyCondition {
                status: crate::status::ConditionStatus::False,
                reason: "BuildFailed".into(),
                message: "</script><script>alert(1)</script><!--".into(),
                last_transition_time: None,
            })),
            ..ObjectStatus::default()
        };
        let statuses = HashMap::from([(ObjectKey::new("f", "a"), status)]);
        let report = StatusReport { kinds: vec![analyze(FluxKind::Kustomization, [ks("f", "a", &[])], &statuses)] };
        let html = render(&report, "t", true);
        assert_eq!(html.matches("</script>").count(), TEMPLATE.matches("</script>").count());
        assert!(!html.contains(DATA_MARKER));
        assert!(!html.contains("http://") && !html.contains("https://"), "no external assets");
    }
}
