//! Config parsing: architectures, defaults, and the errors for what is not supported.

use super::*;

fn parse(json: &str) -> Result<ModelConfig> {
    ModelConfig::from_json(json, Path::new("config.json"))
}

const BASE: &str = r#""vocab_size": 100, "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2"#;

#[test]
fn unsupported_architecture_names_found_and_supported() {
    let err = parse(&format!(
        r#"{{"architectures": ["GPT2LMHeadModel"], {BASE}}}"#
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("GPT2LMHeadModel"), "{err}");
    assert!(err.contains("LlamaForCausalLM"), "{err}");
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn unsupported_rope_scaling_is_an_error() {
    let err = parse(&format!(
        r#"{{"architectures": ["LlamaForCausalLM"], {BASE}, "rope_scaling": {{"rope_type": "yarn", "factor": 4.0}}}}"#
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("yarn") && err.contains("llama3"), "{err}");
    assert!(err.contains("rope_scaling"), "{err}");
}

#[test]
fn qwen_defaults_and_llama3_scaling() {
    let q2 = parse(&format!(
        r#"{{"architectures": ["Qwen2ForCausalLM"], {BASE}}}"#
    ))
    .unwrap();
    assert!(q2.qkv_bias && !q2.o_bias && !q2.qk_norm);
    assert_eq!(q2.head_dim, 16);
    let q3 = parse(&format!(
        r#"{{"architectures": ["Qwen3ForCausalLM"], {BASE}, "head_dim": 32}}"#
    ))
    .unwrap();
    assert!(q3.qk_norm && !q3.qkv_bias);
    assert_eq!(q3.head_dim, 32);
    let l = parse(&format!(
        r#"{{"architectures": ["LlamaForCausalLM"], {BASE}, "eos_token_id": [1, 2],
        "rope_scaling": {{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}}}"#
    ))
    .unwrap();
    assert_eq!(l.eos_token_ids, vec![1, 2]);
    assert!(matches!(l.rope_scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0));
}

#[test]
fn mistral_window_checked_against_length() {
    let m = parse(&format!(
        r#"{{"architectures": ["MistralForCausalLM"], {BASE}, "sliding_window": 16}}"#
    ))
    .unwrap();
    assert!(m.check_sequence_length(16).is_ok());
    assert!(m.check_sequence_length(17).is_err());
}

/// The older Gemma 3 layout (`sliding_window_pattern`, `rope_local_base_freq`, `rope_theta`)
/// and its defaults resolve as transformers resolves them.
#[test]
fn gemma3_older_fields_and_defaults() {
    let g = parse(
        r#"{"architectures": ["Gemma3ForCausalLM"], "vocab_size": 100, "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 7, "num_attention_heads": 4,
        "sliding_window": 512, "sliding_window_pattern": 3, "rope_local_base_freq": 5000.0,
        "query_pre_attn_scalar": 64}"#,
    )
    .unwrap();
    let sliding = LayerKind::Sliding { window: 512 };
    let full = LayerKind::Full;
    let want = [sliding, sliding, full, sliding, sliding, full, sliding];
    assert_eq!(g.layer_kinds, want);
    assert_eq!(g.rope_theta, 1_000_000.0);
    assert_eq!(g.local_rope.as_ref().map(|r| r.theta), Some(5000.0));
    assert_eq!(g.attention_scale, 0.125);
    assert_eq!(g.head_dim, 256);
    assert_eq!(g.embed_scale, Some(8.0));
    assert_eq!(g.activation, Activation::GeluTanh);
    assert!(g.tie_word_embeddings && g.qk_norm && g.sandwich_norms);
    assert_eq!(g.norm_weight_offset, 1.0);
    // No window of its own to check: the sliding layers are masked.
    assert!(g.check_sequence_length(100_000).is_ok());
}

#[test]
fn gemma_features_we_lack_are_named() {
    for (extra, needles) in [
        (
            r#""final_logit_softcapping": 30.0"#,
            ["final_logit_softcapping", "soft-capping"],
        ),
        (
            r#""use_bidirectional_attention": true"#,
            ["use_bidirectional_attention", "bidirectional"],
        ),
        (
            r#""hidden_activation": "relu""#,
            ["hidden_activation", "`relu`"],
        ),
        (
            r#""layer_types": ["sliding_attention", "chunked"]"#,
            ["layer_types", "`chunked`"],
        ),
        (
            r#""layer_types": ["full_attention"]"#,
            ["layer_types", "1 entries for 2 layers"],
        ),
    ] {
        let json = format!(r#"{{"architectures": ["Gemma3ForCausalLM"], {BASE}, {extra}}}"#);
        let err = parse(&json).unwrap_err().to_string();
        for needle in needles {
            assert!(err.contains(needle), "{extra}: {err}");
        }
    }
}
