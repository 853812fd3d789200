//! Provider adapters: where a run meets a model. The worker asks [`Providers`] for the adapter
//! of a model's `provider` and calls [`runbase_domain::provider::Provider::run`].

#![cfg_attr(test, allow(clippy::unwrap_used, reason = "tests may unwrap"))]

mod builtin;
mod placeholder;

pub use builtin::Builtin;

use runbase_domain::catalog::Model;
use runbase_domain::provider::Provider;
use std::collections::HashMap;
use std::sync::Arc;

/// The configured adapters, by the provider name the catalogue uses.
#[derive(Clone)]
pub struct Providers {
    by_name: HashMap<String, Arc<dyn Provider>>,
}

impl Providers {
    /// The adapters that need no configuration: `builtin`.
    pub fn builtin_only() -> Self {
        let mut by_name: HashMap<String, Arc<dyn Provider>> = HashMap::new();
        by_name.insert("builtin".into(), Arc::new(Builtin));
        Self { by_name }
    }

    /// The adapter that runs `model`, if its provider is configured.
    pub fn for_model(&self, model: &Model) -> Option<Arc<dyn Provider>> {
        self.by_name.get(&model.provider).cloned()
    }

    /// Whether `model` can run here (its provider is configured and knows the model).
    pub fn can_run(&self, model: &Model) -> bool {
        match model.provider.as_str() {
            "builtin" => builtin::knows(&model.upstream),
            other => self.by_name.contains_key(other),
        }
    }
}
