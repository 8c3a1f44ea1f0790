//! What a unified call's `model` names (DESIGN.md section 7, "Unified").

use super::Refused;
use crate::catalog::Catalog;

/// Where a unified call goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `provider/model`, or a bare model id the catalog knows.
    Model { provider: String, model: String },
    /// A bare provider id: the credential's model override, else the provider's default.
    Provider(String),
    /// `auto`: the first provider in the policy's priority order for which the chain
    /// yields a credential.
    Auto,
}

/// Bare model ids by prefix, for models the price table does not list.
const PREFIXES: &[(&str, &str)] = &[
    ("claude-", "anthropic"),
    ("gpt-", "openai"),
    ("chatgpt-", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("text-embedding-", "openai"),
    ("gemini-", "gemini"),
    ("text-embedding-004", "gemini"),
    ("voyage-", "voyage"),
];

/// Reads `model` against the catalog. Only AI providers are named.
pub fn route(model: &str, catalog: &Catalog) -> Result<Route, Refused> {
    let model = model.trim();
    let ai = |id: &str| catalog.get(id).filter(|p| p.kind == "ai").map(|p| p.id.clone());
    if model.is_empty() {
        return Err(Refused::new("`model` is required: `provider/model`, a model id, a provider id or `auto`"));
    }
    if model == "auto" {
        return Ok(Route::Auto);
    }
    if let Some((provider, rest)) = model.split_once('/') {
        return match ai(provider) {
            Some(provider) if !rest.is_empty() => Ok(Route::Model { provider, model: rest.to_owned() }),
            Some(provider) => Ok(Route::Provider(provider)),
            None => Err(Refused::new(format!(
                "`{model}` names no provider keygate knows: write `provider/model`, e.g. `anthropic/claude-sonnet-4-20250514`"
            ))),
        };
    }
    if let Some(provider) = ai(model) {
        return Ok(Route::Provider(provider));
    }
    // A model the price table lists, then a known prefix (the longest that matches).
    if let Some(p) = catalog.all().iter().find(|p| p.kind == "ai" && p.prices.contains_key(model)) {
        return Ok(Route::Model { provider: p.id.clone(), model: model.to_owned() });
    }
    PREFIXES
        .iter()
        .filter(|(prefix, _)| model.starts_with(prefix))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, provider)| Route::Model { provider: (*provider).to_owned(), model: model.to_owned() })
        .ok_or_else(|| {
            Refused::new(format!(
                "keygate cannot tell which provider serves `{model}`: write `provider/model` (e.g. `openrouter/{model}`), \
                 a provider id, or `auto`"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(model: &str) -> Result<Route, Refused> {
        route(model, &Catalog::builtin().unwrap())
    }

    fn m(provider: &str, model: &str) -> Result<Route, Refused> {
        Ok(Route::Model { provider: provider.into(), model: model.into() })
    }

    #[test]
    fn every_form_of_model_names_its_provider() {
        assert_eq!(r("auto"), Ok(Route::Auto));
        assert_eq!(r("anthropic/claude-sonnet-4-20250514"), m("anthropic", "claude-sonnet-4-20250514"));
        assert_eq!(r("openrouter/anthropic/claude-3.5"), m("openrouter", "anthropic/claude-3.5"));
        assert_eq!(
            r("bedrock/anthropic.claude-3-haiku-20240307-v1:0"),
            m("bedrock", "anthropic.claude-3-haiku-20240307-v1:0")
        );
        assert_eq!(r("anthropic"), Ok(Route::Provider("anthropic".into())));
        assert_eq!(r("openai/"), Ok(Route::Provider("openai".into())));
        assert_eq!(r("claude-3-haiku-20240307"), m("anthropic", "claude-3-haiku-20240307"));
        assert_eq!(r("claude-haiku-4-5"), m("anthropic", "claude-haiku-4-5"));
        assert_eq!(r("gpt-4o-mini"), m("openai", "gpt-4o-mini"));
        assert_eq!(r("o3-mini"), m("openai", "o3-mini"));
        assert_eq!(r("gemini-2.5-pro"), m("gemini", "gemini-2.5-pro"));
        assert!(r("mapbox/x").is_err(), "not an AI provider");
        assert!(r("nobody/x").is_err());
        assert!(r("llama-3").unwrap_err().0.contains("provider/model"));
        assert!(r("").is_err());
    }
}
