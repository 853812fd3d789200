//! The model catalogue: which models exist, what input they take, what they cost and which
//! provider runs them. Loaded from TOML: the built-in default, then any `--catalog` files, whose
//! models add to or replace the default ones by id.

use crate::money::Millicents;
use crate::schema::InputSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use utoipa::ToSchema;

/// The catalogue that ships in the binary, one file per maker (merged in this order).
pub const DEFAULT_CATALOG: &[(&str, &str)] = &[
    ("runbase.toml", include_str!("../catalog/runbase.toml")),
    ("google.toml", include_str!("../catalog/google.toml")),
    ("openai.toml", include_str!("../catalog/openai.toml")),
    ("bytedance.toml", include_str!("../catalog/bytedance.toml")),
    ("kling.toml", include_str!("../catalog/kling.toml")),
    ("minimax.toml", include_str!("../catalog/minimax.toml")),
    ("extras.toml", include_str!("../catalog/extras.toml")),
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default, rename = "model")]
    models: Vec<ModelSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelSpec {
    id: String,
    name: String,
    #[serde(default)]
    description: String,
    /// Capability tags, several per model (`Text to image`, `Image editing`, `4K`, ...): the
    /// models page and `GET /api/v1/models?tag=` filter by them.
    #[serde(default)]
    tags: Vec<String>,
    /// The single category of catalogue files written before tags; read as one tag.
    category: Option<String>,
    /// Who makes the model (`Google`, `ByteDance`, ...), shown in its page's header.
    #[serde(default)]
    maker: String,
    /// Example inputs for the model's page (each fills the Playground in one click).
    #[serde(default)]
    examples: Vec<ExampleSpec>,
    /// Which adapter runs it (`builtin`, `cog`, `replicate`, `fal`, `openai`, `gemini`, ...).
    provider: String,
    /// The adapter's own name for the model, when it differs from the id.
    upstream: Option<String>,
    /// Adapter-specific settings of this route (e.g. `endpoint` for `openai`).
    #[serde(default)]
    options: Option<toml::Table>,
    /// Routes tried in order when the first one fails with a transient error.
    #[serde(default)]
    fallback: Vec<RouteSpec>,
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
    price: PriceSpec,
    input_schema: Value,
    output_schema: Value,
}

/// An example input shown on a model's page.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ModelExample)]
pub struct ExampleSpec {
    pub title: String,
    #[schema(value_type = Object)]
    pub input: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteSpec {
    provider: String,
    upstream: Option<String>,
    #[serde(default)]
    options: Option<toml::Table>,
}

/// One way to run a model: an adapter, the upstream's name for the model, and options.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub provider: String,
    pub upstream: String,
    /// Adapter-specific settings (a JSON object, empty when none).
    pub options: Value,
}

impl Route {
    /// A string option, when set.
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options.get(name).and_then(Value::as_str)
    }
}

fn default_timeout() -> u64 {
    600
}

/// A model's price: a base amount, optionally chosen by the values of some input fields and/or
/// multiplied by an integer input field (e.g. seconds of video).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PriceSpec {
    /// Base price in cents; up to three decimals (kept exactly as millicents). It applies to
    /// inputs the `by` table has no entry for, so it should be the highest of the table.
    pub cents: f64,
    /// Price by the values of input fields, replacing `cents` for those values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<PriceBy>,
    /// An input field holding a whole number (`5`, or `"5"` for string enums such as a video's
    /// `duration`) the price is multiplied by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<String>,
}

/// `by = { field = "resolution", cents = { "1K" = 6, "4K" = 13 } }`, or with several fields,
/// `by = { field = ["resolution", "generate_audio"], cents = { "720p,true" = 4.1, ... } }`: the
/// key is the fields' values joined with `,` (booleans as `true`/`false`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PriceBy {
    pub field: PriceFields,
    pub cents: BTreeMap<String, f64>,
}

/// One field, or several.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum PriceFields {
    One(String),
    Many(Vec<String>),
}

impl PriceFields {
    pub fn names(&self) -> Vec<String> {
        match self {
            PriceFields::One(f) => vec![f.clone()],
            PriceFields::Many(fs) => fs.clone(),
        }
    }
}

fn cents_to_millicents(cents: f64) -> Result<Millicents, String> {
    let m = cents * 1000.0;
    if !m.is_finite() || m < 0.0 || (m - m.round()).abs() > 1e-6 || m > 1e15 {
        return Err(format!(
            "price {cents} is not a non-negative amount of cents with at most three decimals"
        ));
    }
    Ok(Millicents(m.round() as i64))
}

/// A [`PriceSpec`] checked and converted to millicents.
#[derive(Debug, Clone)]
pub struct Price {
    spec: PriceSpec,
    base: Millicents,
    by: Option<(Vec<String>, BTreeMap<String, Millicents>)>,
    per: Option<String>,
}

/// An input value as a key of a `by` table.
fn price_key(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

impl Price {
    fn from_spec(spec: PriceSpec) -> Result<Self, String> {
        let base = cents_to_millicents(spec.cents)?;
        let by = match &spec.by {
            None => None,
            Some(b) => {
                let fields = b.field.names();
                if fields.is_empty() {
                    return Err("price.by.field names no field".into());
                }
                let mut m = BTreeMap::new();
                for (k, v) in &b.cents {
                    if k.split(',').count() != fields.len() {
                        return Err(format!(
                            "price.by.cents key {k:?} needs one value per field of {fields:?}, joined with ','"
                        ));
                    }
                    m.insert(k.clone(), cents_to_millicents(*v)?);
                }
                Some((fields, m))
            }
        };
        Ok(Price {
            base,
            by,
            per: spec.per.clone(),
            spec,
        })
    }

    pub fn spec(&self) -> &PriceSpec {
        &self.spec
    }

    /// The price on the wire, in integer micro-USD like `costUsd`: `baseUsd`, and when the
    /// price depends on the input, `byFields` with `byValueUsd` (the price for each combination
    /// of their values, joined with `,`) and `perField` (a whole-number field the price is
    /// multiplied by).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.object()).unwrap_or(Value::Null)
    }

    /// The price as the API shows it ([`Price::to_json`]).
    pub fn object(&self) -> PriceObject {
        let (by_fields, by_value_usd) = match &self.by {
            Some((fields, table)) => (
                Some(fields.clone()),
                Some(
                    table
                        .iter()
                        .map(|(k, v)| (k.clone(), v.micro_usd()))
                        .collect(),
                ),
            ),
            None => (None, None),
        };
        PriceObject {
            base_usd: self.base.micro_usd(),
            by_fields,
            by_value_usd,
            per_field: self.per.clone(),
        }
    }

    /// The base price, and the `by` table (fields, and the price of each key) when there is one.
    pub fn table(&self) -> PriceTable<'_> {
        PriceTable {
            base: self.base,
            by: self.by.as_ref().map(|(f, t)| (f.as_slice(), t)),
            per: self.per.as_deref(),
        }
    }

    /// The price of one run with this (validated, defaulted) input.
    pub fn for_input(&self, input: &Value) -> Result<Millicents, String> {
        let mut price = self.base;
        if let Some((fields, table)) = &self.by {
            let key = fields
                .iter()
                .map(|f| price_key(input.get(f)))
                .collect::<Vec<_>>()
                .join(",");
            if let Some(p) = table.get(&key) {
                price = *p;
            }
        }
        if let Some(field) = &self.per {
            let units = input
                .get(field)
                .and_then(|v| match v {
                    Value::String(s) => s.trim().parse::<i64>().ok(),
                    Value::Number(n) => n
                        .as_i64()
                        .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 1e15).map(|f| f as i64)),
                    _ => None,
                })
                .filter(|n| *n >= 0)
                .ok_or_else(|| {
                    format!(
                        "input.{field}: must be a non-negative whole number (the price depends on it)"
                    )
                })?;
            price = price
                .checked_mul(units)
                .ok_or_else(|| format!("input.{field}: too large"))?;
        }
        Ok(price)
    }
}

/// What a model page shows of a price.
#[derive(Debug, Clone, Copy)]
pub struct PriceTable<'a> {
    pub base: Millicents,
    pub by: Option<(&'a [String], &'a BTreeMap<String, Millicents>)>,
    pub per: Option<&'a str>,
}

/// One model of the catalogue.
#[derive(Debug)]
pub struct Model {
    pub id: String,
    pub name: String,
    pub description: String,
    /// Capability tags (`Text to image`, `Image to video`, `4K`, ...), several per model.
    pub tags: Vec<String>,
    /// Who makes it (`Google`, `OpenAI`, ...); empty when unknown.
    pub maker: String,
    pub examples: Vec<ExampleSpec>,
    /// The routes this server can use, in order of preference; empty when none of the model's
    /// providers is configured, which makes the model unavailable (test keys can still run it,
    /// through the simulator).
    pub routes: Vec<Route>,
    pub timeout: Duration,
    pub price: Price,
    pub input_schema: InputSchema,
    pub output_schema: Value,
}

impl Model {
    /// Whether live (non-test) keys can run it here.
    pub fn is_available(&self) -> bool {
        !self.routes.is_empty()
    }

    /// Whether one of its tags is `tag` (case-insensitive).
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t.eq_ignore_ascii_case(tag))
    }

    /// The public description of the model (the API's model object, camelCase like the run).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.object()).unwrap_or(Value::Null)
    }

    /// The API's model object ([`ModelObject`]).
    pub fn object(&self) -> ModelObject {
        ModelObject {
            id: self.id.clone(),
            name: self.name.clone(),
            maker: self.maker.clone(),
            description: self.description.clone(),
            tags: self.tags.clone(),
            available: self.is_available(),
            price: self.price.object(),
            input_schema: self.input_schema.raw().clone(),
            output_schema: self.output_schema.clone(),
            examples: self.examples.clone(),
        }
    }
}

/// The name of a model's input schema among the OpenAPI document's components:
/// `ModelInput_<provider>_<name>` (a model id's characters are all allowed in component names).
pub fn input_schema_component(id: &str) -> String {
    format!("ModelInput_{}", id.replacen('/', "_", 1))
}

/// A model as `GET /api/v1/models` and `GET /api/v1/models/{provider}/{name}` show it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Model)]
pub struct ModelObject {
    /// `provider/name`, what a run's `model` names.
    pub id: String,
    pub name: String,
    /// Who makes it (`Google`, `OpenAI`, ...); empty when unknown.
    pub maker: String,
    pub description: String,
    /// Capability tags (`Text to image`, `Image to video`, `4K`, ...).
    pub tags: Vec<String>,
    /// Whether live keys can run it on this server (one of its providers has credentials);
    /// test keys can run every model, through the simulator.
    pub available: bool,
    pub price: PriceObject,
    /// The JSON Schema a run's `input` must match; also in this document as the component
    /// `ModelInput_<provider>_<name>`, which the create body's `input` refers to.
    #[schema(value_type = Object)]
    pub input_schema: Value,
    /// The JSON Schema of a succeeded run's `output`.
    #[schema(value_type = Object)]
    pub output_schema: Value,
    /// Example inputs (`title`, `input`).
    pub examples: Vec<ExampleSpec>,
}

/// A model's price, in integer micro-USD like `costUsd`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PriceObject {
    /// The price of a run whose input the `byValueUsd` table has no entry for.
    pub base_usd: i64,
    /// The input fields the price depends on, or `null`.
    #[schema(required = true)]
    pub by_fields: Option<Vec<String>>,
    /// The price for each combination of the `byFields` values, joined with `,`; or `null`.
    #[schema(required = true)]
    pub by_value_usd: Option<BTreeMap<String, i64>>,
    /// A whole-number input field the price is multiplied by (e.g. `duration`), or `null`.
    #[schema(required = true)]
    pub per_field: Option<String>,
}

/// All models, by id, in catalogue order.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    models: Vec<Arc<Model>>,
    index: HashMap<String, usize>,
}

impl Catalog {
    /// The built-in default catalogue.
    pub fn builtin() -> Result<Self, String> {
        let mut c = Catalog::default();
        for (file, text) in DEFAULT_CATALOG {
            c.merge_toml(text)
                .map_err(|e| format!("built-in catalogue ({file}): {e}"))?;
        }
        Ok(c)
    }

    /// Adds the models of a TOML document, replacing any with the same id.
    pub fn merge_toml(&mut self, text: &str) -> Result<(), String> {
        let file: CatalogFile = toml::from_str(text).map_err(|e| e.to_string())?;
        for spec in file.models {
            let id = spec.id.clone();
            let model = Self::build(spec).map_err(|e| format!("model {id}: {e}"))?;
            self.insert(model);
        }
        Ok(())
    }

    fn build(spec: ModelSpec) -> Result<Model, String> {
        let valid_id = spec.id.split_once('/').is_some_and(|(p, n)| {
            let ok = |s: &str| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            };
            ok(p) && ok(n)
        });
        if !valid_id {
            return Err("an id must look like provider/name".into());
        }
        let route = |provider: String, upstream: Option<String>, options: Option<toml::Table>| {
            let options = match options {
                None => Value::Object(Default::default()),
                Some(t) => serde_json::to_value(t).map_err(|e| e.to_string())?,
            };
            Ok::<_, String>(Route {
                upstream: upstream.unwrap_or_else(|| spec.id.clone()),
                provider,
                options,
            })
        };
        let mut tags = spec.tags;
        if let Some(category) = spec.category
            && !tags.iter().any(|t| t.eq_ignore_ascii_case(&category))
        {
            tags.push(category);
        }
        if tags.is_empty() {
            return Err("a model needs at least one tag (tags = [\"Text to image\", ...])".into());
        }
        let mut routes = vec![route(spec.provider, spec.upstream, spec.options)?];
        for f in spec.fallback {
            routes.push(route(f.provider, f.upstream, f.options)?);
        }
        Ok(Model {
            id: spec.id,
            name: spec.name,
            description: spec.description,
            tags,
            maker: spec.maker,
            examples: spec.examples,
            routes,
            timeout: Duration::from_secs(spec.timeout_secs.max(1)),
            price: Price::from_spec(spec.price)?,
            input_schema: InputSchema::compile(spec.input_schema)?,
            output_schema: spec.output_schema,
        })
    }

    fn insert(&mut self, model: Model) {
        let model = Arc::new(model);
        match self.index.get(&model.id) {
            Some(&i) => self.models[i] = model,
            None => {
                self.index.insert(model.id.clone(), self.models.len());
                self.models.push(model);
            }
        }
    }

    /// Keeps only the routes `usable` accepts (those whose provider is configured); a model
    /// left with none stays listed but unavailable. Call before sharing the catalogue.
    pub fn restrict_routes(
        &mut self,
        mut usable: impl FnMut(&Route) -> bool,
    ) -> Result<(), String> {
        for m in &mut self.models {
            let m = Arc::get_mut(m)
                .ok_or("the catalogue is already shared; restrict its routes before")?;
            m.routes.retain(&mut usable);
        }
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Model>> {
        self.index.get(id).map(|&i| &self.models[i])
    }

    pub fn models(&self) -> &[Arc<Model>] {
        &self.models
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_builtin_catalogue_loads() {
        let c = Catalog::builtin().unwrap();
        let echo = c.get("runbase/echo").unwrap();
        assert_eq!(
            echo.price.for_input(&json!({"text": "hi"})).unwrap(),
            Millicents(1000)
        );
        assert!(c.get("runbase/placeholder-image").is_some());
    }

    #[test]
    fn prices_by_field_and_per_unit() {
        let mut c = Catalog::default();
        c.merge_toml(
            r#"
            [[model]]
            id = "acme/video"
            name = "Video"
            category = "text to video"
            provider = "builtin"
            price = { cents = 10, per = "duration", by = { field = "resolution", cents = { "4K" = 25.5 } } }
            input_schema = { type = "object", properties = { duration = { type = "integer" } } }
            output_schema = { type = "object" }
            "#,
        )
        .unwrap();
        let m = c.get("acme/video").unwrap();
        assert_eq!(
            m.price.for_input(&json!({"duration": 5})).unwrap(),
            Millicents(50_000)
        );
        assert_eq!(
            m.price
                .for_input(&json!({"duration": 2, "resolution": "4K"}))
                .unwrap(),
            Millicents(51_000)
        );
        assert!(m.price.for_input(&json!({})).is_err());
    }

    #[test]
    fn prices_by_several_fields_and_per_string_seconds() {
        let mut c = Catalog::default();
        c.merge_toml(
            r#"
            [[model]]
            id = "acme/clip"
            name = "Clip"
            tags = ["Text to video"]
            provider = "builtin"
            price = { cents = 3, per = "duration", by = { field = ["resolution", "generate_audio"], cents = { "720p,true" = 2.5, "720p,false" = 1.25 } } }
            input_schema = { type = "object", properties = { duration = { type = "string" } } }
            output_schema = { type = "object" }
            "#,
        )
        .unwrap();
        let p = &c.get("acme/clip").unwrap().price;
        let at = |v: Value| p.for_input(&v);
        assert_eq!(
            at(json!({"duration": "4", "resolution": "720p", "generate_audio": true})),
            Ok(Millicents(10_000))
        );
        assert_eq!(
            at(json!({"duration": "8", "resolution": "720p", "generate_audio": false})),
            Ok(Millicents(10_000))
        );
        // A combination the table lacks pays the base price.
        assert_eq!(
            at(json!({"duration": 2, "resolution": "1080p", "generate_audio": true})),
            Ok(Millicents(6_000))
        );
        assert!(at(json!({"duration": "five"})).is_err());
        assert!(at(json!({"duration": "-1"})).is_err());
        assert!(at(json!({"duration": 1.5})).is_err());
        assert_eq!(
            p.to_json(),
            json!({"baseUsd": 30_000, "byFields": ["resolution", "generate_audio"],
                   "byValueUsd": {"720p,false": 12_500, "720p,true": 25_000}, "perField": "duration"})
        );
        // Keys must have one value per field.
        let mut c = Catalog::default();
        let err = c
            .merge_toml(
                r#"
                [[model]]
                id = "acme/bad"
                name = "Bad"
                tags = ["Text to video"]
                provider = "builtin"
                price = { cents = 3, by = { field = ["a", "b"], cents = { "x" = 1 } } }
                input_schema = { type = "object" }
                output_schema = { type = "object" }
                "#,
            )
            .unwrap_err();
        assert!(err.contains("one value per field"), "{err}");
    }

    /// Every default model: the base price (charged for an input the table lacks) is at least
    /// every entry of its table, so no input is charged less than the most it could cost; and
    /// every combination of its enums and booleans has a price.
    #[test]
    fn default_prices_never_undercharge_and_cover_every_option() {
        let c = Catalog::builtin().unwrap();
        for m in c.models() {
            let t = m.price.table();
            if let Some((_, table)) = t.by {
                for (k, v) in table {
                    assert!(*v <= t.base, "{}: {k} costs more than the base", m.id);
                }
            }
            let props = m.input_schema.raw()["properties"].as_object().unwrap();
            let mut inputs = vec![serde_json::Map::new()];
            for (name, p) in props {
                let values: Vec<Value> =
                    match (p.get("enum"), p.get("type").and_then(Value::as_str)) {
                        (Some(Value::Array(e)), _) => e.clone(),
                        (_, Some("boolean")) => vec![json!(true), json!(false)],
                        _ => match p.get("default").or(p.get("minimum")) {
                            Some(v) => vec![v.clone()],
                            None => continue,
                        },
                    };
                inputs = inputs
                    .into_iter()
                    .flat_map(|i| {
                        values.iter().map(move |v| {
                            let mut i = i.clone();
                            i.insert(name.clone(), v.clone());
                            i
                        })
                    })
                    .collect();
            }
            for input in inputs {
                let input = Value::Object(input);
                let price = m
                    .price
                    .for_input(&input)
                    .unwrap_or_else(|e| panic!("{}: {e}", m.id));
                if let Some((fields, table)) = t.by {
                    let key = fields
                        .iter()
                        .map(|f| price_key(input.get(f)))
                        .collect::<Vec<_>>()
                        .join(",");
                    assert!(table.contains_key(&key), "{}: no price for {key}", m.id);
                }
                assert!(
                    price > Millicents::ZERO || m.id.starts_with("runbase/"),
                    "{}",
                    m.id
                );
            }
        }
    }

    #[test]
    fn later_files_replace_models_by_id() {
        let mut c = Catalog::builtin().unwrap();
        let n = c.models().len();
        c.merge_toml(
            r#"
            [[model]]
            id = "runbase/echo"
            name = "Echo, dearer"
            category = "text to text"
            provider = "builtin"
            upstream = "echo"
            price = { cents = 0.25 }
            input_schema = { type = "object" }
            output_schema = { type = "object" }
            "#,
        )
        .unwrap();
        assert_eq!(c.models().len(), n);
        assert_eq!(
            c.get("runbase/echo")
                .unwrap()
                .price
                .for_input(&json!({}))
                .unwrap(),
            Millicents(250)
        );
    }

    #[test]
    fn bad_entries_are_refused_with_the_reason() {
        let mut c = Catalog::default();
        let err = c
            .merge_toml(
                r#"
                [[model]]
                id = "noslash"
                name = "x"
                category = "x"
                provider = "builtin"
                price = { cents = 1 }
                input_schema = { type = "object" }
                output_schema = {}
                "#,
            )
            .unwrap_err();
        assert!(err.contains("provider/name"), "{err}");
        assert!(c.merge_toml("[[model]]\nid = 1").is_err());
    }
}
