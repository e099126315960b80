//! The rotary embedding settings of a `config.json`: `rope_theta` and `rope_scaling`, or the newer
//! `rope_parameters` (one object, or one per layer type as Gemma 3 writes them).

use serde_json::Value;

/// The supported `rope_scaling` types (`null`/`default` means no scaling).
pub const SUPPORTED_ROPE_SCALING: [&str; 3] = ["default", "linear", "llama3"];

/// RoPE frequency scaling (`rope_scaling` in `config.json`).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Position interpolation: frequencies divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.1's piecewise scaling of low frequencies.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

/// One RoPE: base frequency and scaling.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeSettings {
    pub theta: f64,
    pub scaling: RopeScaling,
}

/// The RoPE of full-attention layers and, when it differs, of sliding-window layers, from
/// `rope_theta` + `rope_scaling` (+ Gemma 3's `rope_local_base_freq`) or from `rope_parameters`
/// (one object, or `full_attention` / `sliding_attention` objects). `defaults` are the
/// architecture's `(global, local)` base frequencies; `local` is `None` for a model without
/// per-layer-type RoPE. Errors say what is wrong (the field is `rope_scaling`).
pub(super) fn resolve(
    raw: &super::raw::RawConfig,
    defaults: (f64, Option<f64>),
) -> std::result::Result<(RopeSettings, Option<RopeSettings>), String> {
    let max_pos = raw.max_position_embeddings;
    let (global_default, local_default) = defaults;
    let mut theta = raw.rope_theta.unwrap_or(global_default);
    let mut scaling_value = raw.rope_scaling.clone();
    let mut local_theta = local_default.map(|d| raw.rope_local_base_freq.unwrap_or(d));
    match &raw.rope_parameters {
        Some(Value::Object(params)) if params.contains_key("full_attention") => {
            let per_type = |key: &str| params.get(key).and_then(Value::as_object);
            if let Some(full) = per_type("full_attention") {
                theta = full
                    .get("rope_theta")
                    .and_then(Value::as_f64)
                    .unwrap_or(theta);
                scaling_value = Some(Value::Object(full.clone()));
            }
            if let Some(sliding) = per_type("sliding_attention") {
                let kind = sliding.get("rope_type").and_then(Value::as_str);
                if !matches!(kind, None | Some("default")) {
                    return Err(format!(
                        "sliding_attention: unsupported rope_type `{}`; supported: default",
                        kind.unwrap_or_default()
                    ));
                }
                let given = sliding.get("rope_theta").and_then(Value::as_f64);
                local_theta = given.or(local_theta);
            }
        }
        Some(Value::Object(params)) => {
            if let Some(given) = params.get("rope_theta").and_then(Value::as_f64) {
                theta = given;
            }
            if scaling_value.is_none() {
                scaling_value = Some(Value::Object(params.clone()));
            }
        }
        _ => {}
    }
    let scaling = parse_rope_scaling(scaling_value.as_ref(), max_pos)?;
    let local = local_theta.map(|theta| RopeSettings {
        theta,
        scaling: RopeScaling::None,
    });
    Ok((RopeSettings { theta, scaling }, local))
}

fn parse_rope_scaling(
    value: Option<&Value>,
    max_position_embeddings: usize,
) -> std::result::Result<RopeScaling, String> {
    let Some(Value::Object(map)) = value else {
        return match value {
            None | Some(Value::Null) => Ok(RopeScaling::None),
            Some(other) => Err(format!("expected an object or null, found {other}")),
        };
    };
    let kind = map
        .get("rope_type")
        .or_else(|| map.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |key: &str| -> std::result::Result<f64, String> {
        map.get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("`{kind}` scaling needs a numeric `{key}`"))
    };
    match kind {
        "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear {
            factor: num("factor")?,
        }),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: map
                .get("original_max_position_embeddings")
                .and_then(Value::as_f64)
                .unwrap_or(max_position_embeddings as f64),
        }),
        other => Err(format!(
            "unsupported rope_scaling type `{other}`; supported: {}",
            SUPPORTED_ROPE_SCALING.join(", ")
        )),
    }
}
