//! Shared helpers for the integration tests: fixture paths, expected tensors, device selection.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod hub_server;

use burn::prelude::Device;
use minordpo::device::{self, DeviceChoice};

/// `tests/fixtures/models/NAME`.
pub fn model_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join("models")
        .join(name)
}

/// The fixture models: every architecture the fixture script builds.
pub const MODELS: [&str; 5] = ["llama3", "qwen2", "qwen3", "mistral", "gemma3"];

/// A tensor from `expected.safetensors` as (shape, f64 values).
pub fn expected_tensor(name: &str, tensor: &str) -> (Vec<usize>, Vec<f64>) {
    read_tensor(&model_dir(name).join("expected.safetensors"), tensor)
}

/// A tensor of the safetensors file `path` as (shape, f64 values).
pub fn read_tensor(path: &Path, tensor: &str) -> (Vec<usize>, Vec<f64>) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = st.tensor(tensor).unwrap();
    let values = match view.dtype() {
        safetensors::Dtype::F32 => view
            .data()
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
            .collect(),
        safetensors::Dtype::I64 => view
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        other => panic!("unexpected dtype {other:?}"),
    };
    (view.shape().to_vec(), values)
}

/// `expected.json` of a fixture model.
pub fn expected_json(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(model_dir(name).join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The wgpu device, or `None` with a printed reason when this machine has no adapter.
pub fn wgpu_device() -> Option<Device> {
    match device::select(DeviceChoice::Wgpu) {
        Ok(selected) => {
            eprintln!("wgpu tests on {}", selected.description);
            Some(selected.device)
        }
        Err(err) => {
            eprintln!("skipping wgpu test: {err}");
            None
        }
    }
}

/// Runs the `minordpo` binary.
pub fn minordpo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_minordpo"))
        .args(args)
        .output()
        .expect("run minordpo")
}

/// The words of a command line written as one string (flags and values without spaces), so that a
/// test's fixed arguments read as the line a user would type.
pub fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// `words(line)` followed by each `(flag, value)` of `valued` (values that may hold spaces, such as
/// paths).
pub fn command_line<'a>(line: &'a str, valued: &[(&'a str, &'a str)]) -> Vec<&'a str> {
    let mut args = words(line);
    args.extend(valued.iter().flat_map(|(flag, value)| [*flag, *value]));
    args
}

/// Runs the `minordpo` binary with `env` set and the Hub variables of the caller's environment
/// removed (so a user's token or offline flag never leaks into a test).
pub fn minordpo_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_minordpo"));
    for name in [
        "HF_TOKEN",
        "HF_TOKEN_PATH",
        "HF_HUB_OFFLINE",
        "HF_ENDPOINT",
        "HF_HOME",
        "HF_HUB_CACHE",
    ] {
        command.env_remove(name);
    }
    command
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run minordpo")
}

/// The captured stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs the `minordpo` binary and asserts it succeeded (showing its stderr when not).
pub fn minordpo_ok(args: &[&str]) -> Output {
    let out = minordpo(args);
    assert!(out.status.success(), "{}", stderr(&out));
    out
}

/// Logits `[seq, vocab]` of one sequence of `ids`, as f32.
pub fn logits(model: &minordpo::model::CausalLm, ids: &[i64], device: &Device) -> Vec<f32> {
    use burn::prelude::{Int, Tensor, TensorData};
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids.to_vec(), [1, ids.len()]), device);
    model
        .forward(tokens, None)
        .into_data()
        .convert::<f32>()
        .try_into_vec()
        .unwrap()
}

/// Asserts a non-zero exit with every needle in stderr and no panic.
pub fn assert_clean_failure(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert!(!out.status.success(), "expected failure, stderr: {err}");
    assert!(
        !err.contains("panicked"),
        "panic instead of an error: {err}"
    );
    for needle in needles {
        assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
    }
}

/// Copies the directory `from` (recursively) to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
