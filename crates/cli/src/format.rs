//! `--format`: table (the default), json, or a Go-template-like line per item, as docker's:
//! `{{.Field}}` for a field of the item, `{{json .}}` for the whole item, `{{json .Field}}` for one field,
//! `\t` and `\n` as escapes, and a leading `table ` to print a header row of the fields' names.

use anyhow::{anyhow, Result};
use serde_json::Value;

pub enum Format {
    Table,
    Json,
    Template { text: String, header: bool },
}

impl Format {
    pub fn parse(s: &str) -> Result<Format> {
        match s {
            "table" | "" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            t if t.contains("{{") => {
                let (text, header) = match t.strip_prefix("table ") {
                    Some(rest) => (rest, true),
                    None => (t, false),
                };
                let text = text.replace("\\t", "\t").replace("\\n", "\n");
                // Check the template now: every action must be closed and name a field or `.`.
                render(&text, &Value::Null, true)?;
                Ok(Format::Template { text, header })
            }
            other => Err(anyhow!(
                "Invalid --format {other:?}: use table, json or a template such as '{{{{.Name}}}}'"
            )),
        }
    }
}

/// The template applied to `item` (an object whose keys are the fields). `check` only validates.
pub fn render(text: &str, item: &Value, check: bool) -> Result<String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| anyhow!("Invalid --format: an action opened with '{{{{' is not closed"))?;
        let action = after[..close].trim();
        let (json, path) = match action.strip_prefix("json ") {
            Some(p) => (true, p.trim()),
            None => (false, action),
        };
        if !path.starts_with('.') {
            return Err(anyhow!(
                "Invalid --format action {action:?}: use {{{{.Field}}}} or {{{{json .}}}}"
            ));
        }
        if !check {
            let v = lookup(item, &path[1..]);
            match (json, v) {
                (true, v) => out.push_str(&v.cloned().unwrap_or(Value::Null).to_string()),
                (false, Some(Value::String(s))) => out.push_str(s),
                (false, Some(Value::Null)) | (false, None) => out.push_str("<no value>"),
                (false, Some(v)) => out.push_str(&v.to_string()),
            }
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `.A.B` in an object; field names match case-insensitively (docker's `.Names` and our `name`).
fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for key in path.split('.').filter(|k| !k.is_empty()) {
        let obj = cur.as_object()?;
        cur = obj.get(key).or_else(|| {
            obj.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v)
        })?;
    }
    Some(cur)
}

/// The header row of a `table` template: each action's field name, upper case.
pub fn header(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after.find("}}").unwrap_or(after.len());
        let action = after[..close].trim().trim_start_matches("json ").trim();
        out.push_str(&action.trim_start_matches('.').to_ascii_uppercase());
        rest = after.get(close + 2..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn templates_render_fields_json_and_headers() {
        let item = json!({"id": "abc", "name": "web", "state": {"status": "running"}, "n": 3});
        assert_eq!(
            render("{{.Name}}\t{{.State.Status}}", &item, false).unwrap(),
            "web\trunning"
        );
        assert_eq!(
            render("{{json .n}} {{.missing}}", &item, false).unwrap(),
            "3 <no value>"
        );
        assert!(render("{{json .}}", &item, false).unwrap().starts_with('{'));
        assert_eq!(header("{{.ID}}\t{{.Name}}"), "ID\tNAME");
        assert!(Format::parse("{{.Name").is_err());
        assert!(Format::parse("{{Name}}").is_err());
        assert!(Format::parse("yaml").is_err());
        assert!(matches!(
            Format::parse("table {{.ID}}").unwrap(),
            Format::Template { header: true, .. }
        ));
    }
}
