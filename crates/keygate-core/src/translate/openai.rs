//! Reading the parts of an OpenAI chat request every translator reads the same way:
//! a message's text, an `image_url` part, an assistant's tool call. Each translator then
//! writes them in its provider's shape.
//!
//! Not for: any provider's own format.

use super::Refused;
use serde_json::{json, Value};

/// A message's content as plain text (system messages, tool results); `provider` names
/// who cannot take other parts there.
pub(crate) fn text_of(content: &Value, i: usize, provider: &str) -> Result<String, Refused> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut text = Vec::new();
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => text.push(part.get("text").and_then(Value::as_str).unwrap_or("")),
                    other => {
                        return Err(Refused::new(format!(
                            "messages[{i}]: a `{}` part cannot go here for {provider} (only text)",
                            other.unwrap_or("?")
                        )))
                    }
                }
            }
            Ok(text.concat())
        }
        _ => Err(Refused::new(format!("messages[{i}]: `content` must be a string or an array of parts"))),
    }
}

/// An `image_url` part's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Image<'a> {
    /// A base64 `data:` URL.
    Data { media_type: &'a str, data: &'a str },
    /// Any other URL, as written.
    Link(&'a str),
}

pub(crate) fn image(part: &Value, i: usize) -> Result<Image<'_>, Refused> {
    let url = part
        .get("image_url")
        .and_then(|u| u.get("url").or(Some(u)))
        .and_then(Value::as_str)
        .ok_or_else(|| Refused::new(format!("messages[{i}]: an `image_url` part needs `image_url.url`")))?;
    let Some(rest) = url.strip_prefix("data:") else { return Ok(Image::Link(url)) };
    let (meta, data) =
        rest.split_once(',').ok_or_else(|| Refused::new(format!("messages[{i}]: the image's data URL has no data")))?;
    let media_type = meta.strip_suffix(";base64").ok_or_else(|| {
        Refused::new(format!("messages[{i}]: an image data URL must be base64 (`data:image/png;base64,...`)"))
    })?;
    Ok(Image::Data { media_type, data })
}

/// An assistant's tool call: its id, function name and arguments (a JSON object).
pub(crate) fn tool_call(call: &Value, i: usize) -> Result<(&str, &str, Value), Refused> {
    let function = call.get("function").unwrap_or(&Value::Null);
    let name = function.get("name").and_then(Value::as_str).unwrap_or("");
    let id = call.get("id").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() || id.is_empty() {
        return Err(Refused::new(format!("messages[{i}]: each tool call needs an `id` and a `function.name`")));
    }
    let arguments = function.get("arguments").and_then(Value::as_str).unwrap_or("");
    let input = if arguments.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str::<Value>(arguments)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| Refused::new(format!("messages[{i}]: tool call `{id}`'s arguments are not a JSON object")))?
    };
    Ok((id, name, input))
}
